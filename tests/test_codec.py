"""The codec through the Python API, on the fixture model: byte-exact round trips,
memory vectors where the model can, zstd where it cannot, model checks, resume."""

import dataclasses
import json
import random
import shutil

import pytest
import torch
import zstandard
from safetensors.torch import load_file, save_file

import llmzip
from llmzip import codec, container, kinds
from llmzip.decode import DecodeResult
from llmzip.errors import ChecksumError, LmzError, ModelMismatchError
from llmzip.kinds.memory import MemoryChunk
from llmzip.train import TrainConfig

CORPUS_SENTENCE = b"The quick brown fox jumps over the lazy dog."
FAST = TrainConfig(max_steps=40, extra_steps=10, batch_size=8)


@pytest.fixture(scope="module")
def compressor(tiny_model):
    # short sentences, each smaller than the fixture model's fp16 vector (140 B), still trained
    return codec.LmzCompressor(loaded=tiny_model, chunk_tokens=16, train=FAST, train_small_inputs=True)


@pytest.fixture(scope="module")
def decompressor(tiny_model):
    return codec.LmzDecompressor(loaded=tiny_model)


def one_mb_text():
    rng = random.Random(7)
    words = "memory token vector archive model exact zstd chunk byte text the a of".split()
    lines = (" ".join(rng.choice(words) for _ in range(rng.randint(3, 14))) + ".\n" for _ in range(40_000))
    return "".join(lines).encode()[: 1 << 20]


CASES = {
    "empty": b"",
    "one byte": b"x",
    "ascii": b"Pack my box with five dozen liquor jugs.\n",
    "multibyte utf-8": "東京は日本の首都です。🙂 café naïve Übermäßig\n".encode(),
    "crlf and mixed endings": b"line one\r\nline two\nline three\rend\r\n",
    "bom": "\ufeffThe quick brown fox.".encode(),
    "trailing whitespace": b"trailing spaces   \t \n\n\n   ",
    "nul bytes": b"before\x00\x00after\x00",
    "random binary": random.Random(1).randbytes(3000),
    "latin-1": "señor café à la crème".encode("latin-1"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_is_byte_exact(name, compressor, decompressor):
    data = CASES[name]
    archive = compressor.compress(data)
    assert decompressor.decompress(archive) == data


def test_corpus_text_is_stored_as_a_memory_vector(compressor, decompressor):
    archive, report = compressor.compress_with_report(CORPUS_SENTENCE)
    assert report.memory_chunks == 1 and report.fallback_chunks == 0
    stored = container.unpack(archive).chunks[0]
    assert isinstance(stored, MemoryChunk)
    assert stored.min_margin >= FAST.verify_margin
    checks = decompressor.verify(archive)
    assert [c.kind for c in checks] == ["memory"]
    assert decompressor.decompress(archive) == CORPUS_SENTENCE


def test_one_megabyte_round_trips(tiny_model, decompressor):
    data = one_mb_text()
    # One step per chunk: the point is the size and the fallback path, not training.
    quick = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=64, train=TrainConfig(max_steps=1, batch_size=256))
    archive, report = quick.compress_with_report(data)
    assert report.input_size == len(data) == 1 << 20
    assert decompressor.decompress(archive) == data
    # Stored entirely as fallback, the archive is within 2 % of zstd -19 on the same bytes
    # (issue 11: one record per run of zstd chunks, a short header). BENCHMARKS.md has the row.
    assert report.memory_chunks == 0
    zstd_19 = len(zstandard.ZstdCompressor(level=19).compress(data))
    assert len(archive) <= 1.02 * zstd_19, (len(archive), zstd_19)


def test_module_level_functions_round_trip(tiny_model_dir):
    data = b"Sphinx of black quartz, judge my vow."
    archive = llmzip.compress(data, model=str(tiny_model_dir), chunk_tokens=16, train=FAST)
    assert llmzip.decompress(archive, model=str(tiny_model_dir)) == data


@pytest.mark.parametrize("call", ["compress", "decompress"])
def test_str_input_says_bytes_are_expected(call):
    with pytest.raises(TypeError, match=r"bytes, not str.*encode"):
        getattr(llmzip, call)("some text")


def test_input_over_the_format_limit_is_an_lmz_error(compressor, monkeypatch):
    monkeypatch.setattr(container, "MAX_INPUT_SIZE", 10)
    with pytest.raises(LmzError, match="limit"):
        compressor.compress(b"x" * 11)


def test_non_utf8_input_is_reported(compressor):
    _, report = compressor.compress_with_report(b"abc \xff\xfe def")
    assert report.not_utf8_bytes > 0
    assert report.memory_chunks == 0


def test_wrong_model_is_refused_before_decoding(compressor, tiny_model_dir, tmp_path):
    archive = compressor.compress(CORPUS_SENTENCE)
    other_dir = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other_dir)
    weights = load_file(other_dir / "model.safetensors")
    weights["model.norm.weight"][0] += 1.0
    save_file(weights, other_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelMismatchError, match="weights_fingerprint") as error:
        codec.LmzDecompressor(model=str(other_dir)).decompress(archive)
    expected = container.unpack(archive).header.model["W"].hex()
    assert expected in str(error.value)


def test_a_vector_flipped_after_packing_fails_the_checksum(compressor, decompressor):
    archive = container.unpack(compressor.compress(CORPUS_SENTENCE))
    chunk = archive.chunks[0]
    vector = torch.frombuffer(bytearray(chunk.vector), dtype=torch.float16).clone()
    vector *= -1  # a different, well-formed vector: only the chunk checksum can catch it
    forged = container.pack(
        archive.header,
        [MemoryChunk(vector.numpy().tobytes(), chunk.n_tokens, chunk.length, chunk.check, chunk.min_margin)],
    )
    with pytest.raises(ChecksumError, match="chunk 0"):
        decompressor.decompress(forged)


def test_resume_from_a_journal_gives_the_identical_archive(tiny_model, decompressor, tmp_path):
    data = CORPUS_SENTENCE + b" Pack my box with five dozen liquor jugs. How vexingly quick daft zebras jump!"
    settings = dict(loaded=tiny_model, chunk_tokens=16, train_small_inputs=True,
                    train=TrainConfig(max_steps=40, extra_steps=10, batch_size=1, group_batches=1))
    uninterrupted, report = codec.LmzCompressor(**settings).compress_with_report(data)
    eligible = report.chunks - report.ineligible_chunks
    assert eligible >= 2  # so that one group can finish and the next be interrupted

    journal = tmp_path / "out.lmz.journal"
    interrupted = codec.LmzCompressor(**settings)
    train_group = interrupted.train_group
    calls = []

    def train_then_interrupt(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train_group(*args)

    interrupted.train_group = train_then_interrupt
    with pytest.raises(KeyboardInterrupt):
        interrupted.compress_with_report(data, journal_path=journal)
    assert journal.exists()

    resumed, resumed_report = codec.LmzCompressor(**settings).compress_with_report(data, journal_path=journal)
    assert resumed_report.resumed_chunks == 1
    assert resumed == uninterrupted
    assert decompressor.decompress(resumed) == data


def test_a_journal_for_other_input_is_not_trusted(tiny_model, tmp_path):
    settings = dict(loaded=tiny_model, chunk_tokens=16, train=FAST, train_small_inputs=True)
    journal = tmp_path / "out.lmz.journal"
    codec.LmzCompressor(**settings).compress_with_report(b"Sphinx of black quartz, judge my vow.", journal_path=journal)
    archive, report = codec.LmzCompressor(**settings).compress_with_report(CORPUS_SENTENCE, journal_path=journal)
    assert report.resumed_chunks == 0
    assert archive == codec.LmzCompressor(**settings).compress(CORPUS_SENTENCE)


# ---------------------------------------------------------------- decode groups (issue 13)


def test_recorded_margins_are_the_ones_extract_measures(tiny_model, decompressor):
    """Compress verifies with extract's own grouped computation and records its margins."""
    data = CORPUS_SENTENCE + b" Pack my box with five dozen liquor jugs. How vexingly quick daft zebras jump!"
    compressor = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, train=FAST, decode_group=2,
                                     train_small_inputs=True)
    archive = compressor.compress(data)
    assert container.read_header(archive).to_dict()["settings"]["decode_group"] == 2
    checks = [c for c in decompressor.verify(archive) if c.kind == "memory"]
    assert len(checks) >= 3  # so that there are several groups of 2
    for check in checks:
        assert check.recorded_margin <= check.decode_margin <= check.recorded_margin + 1e-6  # f32, rounded down


def test_a_vector_that_fails_the_grouped_decode_falls_back(tiny_model, decompressor, monkeypatch):
    """A vector that decoded alone during training but not in its decode group is not
    stored: compress replaces it with zstd and re-verifies the regrouped rest."""
    data = CORPUS_SENTENCE + b" Pack my box with five dozen liquor jugs."
    compressor = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, train=FAST, decode_group=2,
                                     train_small_inputs=True)
    honest = compressor.compress_with_report(data)[1]
    assert honest.memory_chunks >= 2
    memory_kind = kinds.memory.KIND
    real_decode = memory_kind.decode
    rounds = []

    def first_row_flips_once(loaded, chunks, group, on_done=None, runner=None):
        results = real_decode(loaded, chunks, group, on_done=on_done, runner=runner)
        rounds.append(len(chunks))
        if len(rounds) == 1:  # the first verification round: chunk 0's first token is wrong
            results[0] = DecodeResult([results[0].token_ids[0] + 1, *results[0].token_ids[1:]], results[0].min_margin)
        return results

    monkeypatch.setattr(memory_kind, "decode", first_row_flips_once)
    archive, report = compressor.compress_with_report(data)
    assert rounds[:2] == [honest.memory_chunks, honest.memory_chunks - 1]
    assert report.memory_chunks == honest.memory_chunks - 1
    monkeypatch.setattr(memory_kind, "decode", real_decode)
    assert decompressor.decompress(archive) == data


def test_an_archive_asking_for_an_absurd_decode_group_is_refused(compressor, decompressor):
    archive = container.unpack(compressor.compress(CORPUS_SENTENCE))
    settings = {**archive.header.settings, "g": 1 << 30}
    forged = container.pack(dataclasses.replace(archive.header, settings=settings), archive.chunks)
    with pytest.raises(LmzError, match="decode group"):
        decompressor.decompress(forged)


def test_decompress_reports_decoded_tokens(compressor, decompressor):
    archive = compressor.compress(CORPUS_SENTENCE)
    seen = []
    decompressor.decompress(archive, on_progress=lambda done, total: seen.append((done, total)))
    total = container.unpack(archive).chunks[0].n_tokens
    assert seen[0] == (0, total) and seen[-1] == (total, total)


def test_a_model_of_another_hidden_size_is_refused_before_its_weights_load(compressor, tiny_model_dir, tmp_path, monkeypatch):
    """Issue 12: what the header and the model's config.json can tell apart is refused
    without loading weights (a wrong --model used to cost a full load first)."""
    archive = compressor.compress(CORPUS_SENTENCE)
    other = tmp_path / "wider"
    shutil.copytree(tiny_model_dir, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "hidden_size": 2 * config["hidden_size"]}))

    def no_loading(*args, **kwargs):
        raise AssertionError("loaded a model the header already rules out")

    monkeypatch.setattr(codec, "load_model", no_loading)
    with pytest.raises(ModelMismatchError, match=r"hidden size 128.*has 64: refusing before loading it"):
        codec.LmzDecompressor(model=str(other)).decompress(archive)


def test_threads_is_set_for_each_call_and_restored(tiny_model, monkeypatch):
    """Issue 32, item 2: ``threads=`` on the API, as the CLI's --threads (one default,
    llmzip.config.DEFAULT_THREADS): the work runs at that many torch threads, and the
    caller's setting is back afterwards."""
    before = torch.get_num_threads()
    wanted = 1 if before > 1 else 2
    seen = []
    compressor = codec.LmzCompressor(loaded=tiny_model, codec="lm", threads=wanted)
    real_pack = compressor.pack_archive
    monkeypatch.setattr(compressor, "pack_archive", lambda *a, **k: seen.append(torch.get_num_threads()) or real_pack(*a, **k))
    data = b"The quick brown fox jumps over the lazy dog. " * 4
    archive = compressor.compress(data)
    assert seen and set(seen) == {wanted} and torch.get_num_threads() == before
    decompressor = codec.LmzDecompressor(loaded=tiny_model, threads=wanted)
    progress = []
    assert decompressor.decompress(archive, on_progress=lambda *_: progress.append(torch.get_num_threads())) == data
    assert progress and set(progress) == {wanted} and torch.get_num_threads() == before
    assert llmzip.decompress(archive, loaded=tiny_model, threads=wanted) == data  # the one-shot functions pass it on
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(LmzError, match="threads"):
            codec.LmzCompressor(loaded=tiny_model, threads=bad)
        with pytest.raises(LmzError, match="threads"):
            codec.LmzDecompressor(loaded=tiny_model, threads=bad)


def test_default_threads_leave_busy_cores_alone(monkeypatch):
    """threads=None: the cores the load average leaves free, at most torch's count, at
    least one; $OMP_NUM_THREADS, a user's explicit choice, is kept."""
    from llmzip import model

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(model.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    for load, expected in [(0.0, 4), (4.6, 3), (7.0, 1), (30.0, 1)]:
        monkeypatch.setattr(model.os, "getloadavg", lambda load=load: (load, load, load))
        assert model.free_cores() == expected
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert model.free_cores() == 4
