"""Kind ``lm``: LM-coded chunks round-trip, survive drift below the recorded tolerance, and
refuse corrupt fields cleanly (tiny fixture model; format/CODEC.md, "Kind lm"). Scheme 1 is
read only (llmzip/kinds/legacy/lm_scheme1.py): its chunks here are coded by the encoder
kept in the fixture tooling (fixtures/legacy_writers.py)."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy
import pytest
import torch

from llmzip import codec, container, kinds
from llmzip.config import TrainConfig
from llmzip.errors import LmzError
from llmzip.kinds import bands, lm
from llmzip.kinds.legacy import lm_scheme1

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _legacy_writers():
    """fixtures/legacy_writers.py, where lm scheme 1's encoder lives now."""
    spec = importlib.util.spec_from_file_location("legacy_writers", FIXTURES / "legacy_writers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LEGACY = _legacy_writers()

TEXTS = [
    b"Hello world, this is a test of the lm kind.\n",
    "El perro come la comida en la casa grande, y despu\u00e9s duerme.\n".encode(),
    b"x" * 60 + b"\n\nThe quick brown fox jumps over the lazy dog. " * 3,
]


def _ids(tiny_model, text: bytes):
    return tiny_model.tokenizer.encode(text.decode(), add_special_tokens=False)


def test_weight_table_is_its_formula():
    assert lm_scheme1.WEIGHTS == lm_scheme1.weight_table(lm.DELTA, lm_scheme1.R_LEVELS)
    assert lm_scheme1.SETTINGS == {"ld": 0.5, "lr": 8, "lb": 8, "lt": 1e-4}  # CODEC.md, "Kind lm", scheme 1
    assert lm.SCHEME_2 == {"ld": 0.5, "lr": 48, "lb": 14, "lt": 1e-4}  # scheme 2, read only
    assert lm.SETTINGS == {"ld": 0.5, "lr": 48, "lb": 14, "lt": lm.WRITE_TOLERANCE}  # scheme 3, written today
    assert [lm.scheme_of(s) for s in (lm_scheme1.SETTINGS, lm.SCHEME_2, lm.SETTINGS)] == [1, 2, 3]
    with pytest.raises(LmzError):
        lm.scheme_of({**lm.SETTINGS, "lb": 12})
    assert lm.DELTA in {2.0**-k for k in range(8)}  # a power of two: logit / DELTA is exact


def test_odds_table_is_its_formula():
    import math

    table = bands.IN_WEIGHT
    assert len(table) == 2 * bands.K_MAX and table[0] == 978 and table[-1] == 2**24 - 978  # CODEC.md
    assert all(round(2**24 / (1 + math.exp(-(k + 0.5) * bands.GAMMA))) == w
               for k, w in zip(range(-bands.K_MAX, bands.K_MAX), table))
    assert all(a + b == 2**24 for a, b in zip(table, reversed(table)))


@pytest.mark.parametrize("compressor_codec", ["lm", "auto", "memory"])
def test_round_trip_through_the_codec(tiny_model, compressor_codec):
    data = b"".join(TEXTS) * 2
    compressor = codec.LmzCompressor(loaded=tiny_model, codec=compressor_codec, chunk_tokens=24,
                                     train=TrainConfig(max_steps=30))
    archive, report = compressor.compress_with_report(data)
    assert codec.LmzDecompressor(loaded=tiny_model).decompress(archive) == data
    parsed = container.unpack(archive)
    # the smallest version that holds what the archive has (lm chunks: 2.1); a model-free one
    # 2.5, or 2.6 when it is the whole input stored or in one zstd frame (one chunk or none)
    needs_model = any(kinds.of(chunk).needs_model for chunk in parsed.chunks)
    minor = max(kinds.of(chunk).minor for chunk in parsed.chunks) if needs_model else 6 if len(parsed.chunks) <= 1 else 5
    assert parsed.version == (2, minor)
    info = container.read_header(archive)
    assert info is not None


def test_unknown_codec_is_refused(tiny_model):
    with pytest.raises(LmzError):
        codec.LmzCompressor(loaded=tiny_model, codec="gzip")


def test_the_compat_archives_select_their_schemes():
    """Scheme 1 as llmzip 0.2.0 wrote it, scheme 2 as llmzip wrote it before scheme 3, and
    scheme 3; all are read (tests/test_compat.py extracts them)."""
    for name, scheme in [("tiny-model-0.2.0-lm.lmz", 1), ("tiny-model-lm-scheme2.lmz", 2),
                         ("tiny-model-lm-scheme3.lmz", 3)]:
        archive = container.unpack((FIXTURES / "compat" / name).read_bytes())
        assert lm.scheme_of(archive.header.settings) == scheme


def _coded(tiny_model, texts, group=8, scheme=3):
    token_lists = [_ids(tiny_model, t) for t in texts]
    stats = bands.Stats()
    if scheme == 3:
        coded = lm.KIND.encode(tiny_model, token_lists, stats=stats)
    else:  # the writer kept in the fixture tooling, in the same groups
        coded = [code for start in range(0, len(token_lists), group)
                 for code in LEGACY.encode_scheme1(tiny_model.model, token_lists[start : start + group], stats=stats)]
    chunks = [lm.LmChunk(c, len(ids), len(t), container.chunk_check(t)) for c, ids, t in zip(coded, token_lists, texts)]
    return token_lists, chunks, stats


def test_escape_paths_are_exercised(tiny_model):
    # the random fixture model is flat: escapes inside a grid and raw escapes both occur (scheme 1)
    token_lists, chunks, stats = _coded(tiny_model, TEXTS, scheme=1)
    assert stats.outcomes[0] > 0 and stats.outcomes[2] > 0 and stats.outcomes[3] > 0
    assert lm.KIND.decode(tiny_model, chunks, 8, scheme=1) == token_lists
    token_lists, chunks, stats = _coded(tiny_model, TEXTS * 4, scheme=3)
    assert stats.outcomes[0] > 0 and stats.outcomes[2] > 0  # grid A, skipped deep edges
    assert lm.KIND.decode(tiny_model, chunks, 8) == token_lists
    assert lm.KIND.decode(tiny_model, chunks, 8, scheme=1) != token_lists  # the schemes differ


@pytest.mark.parametrize("scheme", [1, 3])
def test_decode_with_one_and_two_threads_and_batch_one(tiny_model, scheme):
    token_lists, chunks, _ = _coded(tiny_model, TEXTS, scheme=scheme)
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            assert lm.KIND.decode(tiny_model, chunks, 8, scheme=scheme) == token_lists
            assert lm.KIND.decode(tiny_model, chunks, 1, scheme=scheme) == token_lists  # each chunk alone
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_pass_drift_is_small(tiny_model, threads):
    """The writer's teacher-forced logits (scheme 3) against the decoder's KV-cache steps on
    the same tokens: the drift the tolerance must cover besides another machine's. On the
    default model it is measured in BENCHMARKS.md ("LM coding: drift")."""
    token_lists = [_ids(tiny_model, text) for text in TEXTS]
    steps = {}

    def pick(step, rows, logits):
        for j, i in enumerate(rows):
            steps[i, step] = logits[j].clone()
        return [token_lists[i][step] for i in rows]

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        lm.run_batch(tiny_model.model, [len(ids) for ids in token_lists], pick)
        passes = {owner: row for owners, logits in lm.teacher_forced(tiny_model.model, token_lists, block=7)
                  for owner, row in zip(owners, logits)}
    finally:
        torch.set_num_threads(before)
    assert passes.keys() == steps.keys()
    drift = max(float((passes[key] - steps[key]).abs().max()) for key in steps)
    assert drift < lm.WRITE_TOLERANCE / 20


def test_coding_parts_cover_the_lists_and_never_split_a_run_of_equal_lengths():
    lengths = [3, 3, 3, 5, 2, 2, 7, 1, 1, 1, 1]
    lists = [[0] * n for n in lengths]
    for tokens in (1, 4, 6, 10, 100):
        parts = lm.coding_parts(lists, tokens)
        assert [i for part in parts for i in part] == list(range(len(lists)))
        for part in parts[:-1]:
            assert sum(lengths[i] for i in part) >= tokens
            assert lengths[part.stop - 1] != lengths[part.stop]  # a run of equal lengths is never cut
    assert lm.coding_parts([], 4) == []


def test_coding_in_parts_gives_the_bits_of_coding_all_at_once(tiny_model):
    """The unit of --workers: the parts, coded one by one, are the lists coded at once."""
    token_lists = [_ids(tiny_model, text) for text in TEXTS * 2]
    token_lists.insert(1, list(token_lists[0]))  # a run of two lists of equal length
    whole = lm.encode_batch(tiny_model.model, token_lists)
    parts = lm.coding_parts(token_lists, 20)
    assert len(parts) > 2
    assert [coded for part in parts for coded in lm.encode_batch(tiny_model.model, token_lists[part.start : part.stop])] == whole
    assert lm.KIND.encode(tiny_model, token_lists) == whole


def _drift(monkeypatch, scheme: int, noise) -> None:
    """Every logit the decoder of ``scheme`` sees moves by ``noise(shape)`` (in float64)."""
    if scheme == 1:
        real_row = lm_scheme1.Decoder.__call__

        def drifted_row(self, position, logits):
            return real_row(self, position, (logits.astype(numpy.float64) + noise(logits.shape)).astype(numpy.float32))

        monkeypatch.setattr(lm_scheme1.Decoder, "__call__", drifted_row)
        return
    real = bands.decode_positions

    def drifted(decoders, logits):
        moved = logits.double() + torch.from_numpy(noise(tuple(logits.shape)))
        return real(decoders, moved.float())

    monkeypatch.setattr(bands, "decode_positions", drifted)


@pytest.mark.parametrize("scheme", [1, 3])
def test_drift_below_the_tolerance_never_desynchronises(tiny_model, monkeypatch, scheme):
    """Every logit the decoder sees is moved by uniform noise in (-tolerance, tolerance)."""
    rng = numpy.random.default_rng(16)
    texts, total = [], 0
    words = "the of and to in is was for on that with as by at from it an be this are".split()
    generator = random.Random(16)
    while total < 10_000:
        text = " ".join(generator.choice(words) for _ in range(120)).encode()
        texts.append(text)
        total += len(_ids(tiny_model, text))
    token_lists, chunks, stats = _coded(tiny_model, texts, group=32, scheme=scheme)
    # scheme 3's writer codes from the teacher-forced pass, whose logits differ from the
    # decoder's steps by far less than the rest of its tolerance (test_pass_drift_is_small)
    bound = lm.TOLERANCE * 0.99 if scheme == 1 else lm.WRITE_TOLERANCE * 0.9
    _drift(monkeypatch, scheme, lambda shape: rng.uniform(-1, 1, shape) * bound)
    assert sum(map(len, token_lists)) >= 10_000
    assert lm.KIND.decode(tiny_model, chunks, 32, scheme=scheme) == token_lists
    # every path ran under drift: both grids, (scheme 1) the band, raw ids, (scheme 3) skipped edges
    assert stats.outcomes[0] > 1000 and stats.outcomes[1] > 10
    if scheme == 1:
        assert stats.outcomes[4] > 1000 and stats.outcomes[2] - stats.outcomes[4] + stats.outcomes[3] > 10
    else:
        assert stats.outcomes[2] > 10


def test_drift_above_the_tolerance_can_desynchronise(tiny_model, monkeypatch):
    """The converse, so the test above has teeth: 100x the tolerance breaks some chunk."""
    rng = numpy.random.default_rng(17)
    text = (b"the of and to in is was for on that with as by at from it an be this are " * 30)
    token_lists, chunks, _ = _coded(tiny_model, [text] * 4)
    _drift(monkeypatch, 3, lambda shape: rng.uniform(-1, 1, shape) * lm.WRITE_TOLERANCE * 20)
    assert lm.KIND.decode(tiny_model, chunks, 4) != token_lists


def _archive(tiny_model):
    """An archive of TEXTS, every chunk LM-coded. Compress would store these few hundred bytes
    raw (the random fixture model codes them no smaller than zstd, and a model-free archive
    needs no header), so the lm chunks are packed directly, as compress packs its choice."""
    compressor = codec.LmzCompressor(loaded=tiny_model, codec="lm", chunk_tokens=24)
    _, chunks, _ = _coded(tiny_model, TEXTS)
    return compressor.pack_archive(chunks, b"".join(TEXTS), 24)


def test_corrupted_coded_bytes_fail_cleanly(tiny_model):
    archive = _archive(tiny_model)
    parsed = container.unpack(archive)
    index = next(i for i, c in enumerate(parsed.chunks) if kinds.of(c) is lm.KIND)
    chunk = parsed.chunks[index]
    for flip in range(len(chunk.coded)):
        coded = bytearray(chunk.coded)
        coded[flip] ^= 0x5A
        bad = lm.LmChunk(bytes(coded), chunk.n_tokens, chunk.length, chunk.check)
        # a corrupt code restores some bytes or none, never raises: the codec's checksums decide
        [restored] = lm.KIND.restore([(index, bad)], tiny_model, parsed)
        assert isinstance(restored.data, bytes)
    with pytest.raises(LmzError):
        lm.KIND.decode_fields(memoryview(b""), 5, 0, kinds.WireContext((2, 1), 640), "chunk 0")
    with pytest.raises(LmzError):
        lm.KIND.decode_fields(memoryview(b"\x80"), 5, 0, kinds.WireContext((2, 1), 640), "chunk 0")  # truncated varint
    with pytest.raises(LmzError):
        lm.KIND.decode_fields(memoryview(b"\x80\x80\x08\x01"), 5, 0, kinds.WireContext((2, 1), 640), "chunk 0")  # 2**17 tokens
    with pytest.raises(LmzError):
        lm.KIND.decode_fields(memoryview(b"\x00\x01"), 5, 0, kinds.WireContext((2, 1), 640), "chunk 0")  # 0 tokens


def test_corrupt_archive_is_refused_never_misdecoded(tiny_model):
    archive = bytearray(_archive(tiny_model))
    parsed = container.unpack(bytes(archive))
    assert any(kinds.of(c) is lm.KIND for c in parsed.chunks)
    failures = 0
    for offset in range(40, len(archive) - 8, max(1, len(archive) // 60)):
        bad = bytearray(archive)
        bad[offset] ^= 0x21
        try:
            out = codec.LmzDecompressor(loaded=tiny_model).decompress(bytes(bad))
        except LmzError:
            failures += 1
        else:
            assert out == b"".join(TEXTS)
    assert failures


def test_settings_other_than_this_llmzip_s_are_refused(tiny_model):
    archive = _archive(tiny_model)
    parsed = container.unpack(archive)
    parsed.header.settings["ld"] = 0.25
    items = [(i, c) for i, c in enumerate(parsed.chunks) if kinds.of(c) is lm.KIND]
    with pytest.raises(LmzError):
        lm.KIND.check_before_model(items, parsed)


def test_cli_codec_lm_round_trips(run, tmp_path, tiny_model, tiny_model_dir):
    source = tmp_path / "doc.txt"
    source.write_bytes(b"".join(TEXTS))
    code, _, err = run("compress", source, "--codec", "lm", "--model", tiny_model_dir, "--no-progress")
    assert code == 0 and " chunk" in err  # stored raw: smaller than any lm archive of the fixture model
    code, out, _ = run("extract", f"{source}.lmz", "-o", tmp_path / "back.txt", "--model", tiny_model_dir)
    assert code == 0 and (tmp_path / "back.txt").read_bytes() == source.read_bytes()
    lm_archive = tmp_path / "lm.lmz"  # extract of lm chunks, through the CLI
    lm_archive.write_bytes(_archive(tiny_model))
    code, out, _ = run("info", lm_archive)
    assert code == 0 and "2.1" in out and " lm (" in out
    code, out, _ = run("extract", lm_archive, "-o", tmp_path / "back2.txt", "--model", tiny_model_dir)
    assert code == 0 and (tmp_path / "back2.txt").read_bytes() == source.read_bytes()
    code, _, err = run("compress", source, "--codec", "gzip", "-f")
    assert code == 2


KERNEL_SCRIPT = r"""
import random, sys
from llmzip import codec, container
from llmzip.kinds import lm
from llmzip.model import load_model

loaded = load_model(sys.argv[2])
words = "the of and to in is was for on that with as by at from it an be this are".split()
generator = random.Random(30)
texts = [" ".join(generator.choice(words) for _ in range(150)).encode() + b"\n" for _ in range(3)]
data = b"".join(texts)
if sys.argv[1] == "write":
    token_lists = [loaded.tokenizer.encode(t.decode(), add_special_tokens=False) for t in texts]
    chunks = [lm.LmChunk(c, len(ids), len(t), container.chunk_check(t))
              for c, ids, t in zip(lm.KIND.encode(loaded, token_lists), token_lists, texts)]
    archive = codec.LmzCompressor(loaded=loaded, codec="lm").pack_archive(chunks, data, 256)
    open(sys.argv[3], "wb").write(archive)
else:
    assert codec.LmzDecompressor(loaded=loaded).decompress(open(sys.argv[3], "rb").read()) == data
"""

# another machine's arithmetic on this one (docs/DESIGN.md, invariant 8)
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
SCALAR = {"ATEN_CPU_CAPABILITY": "default"}


@pytest.mark.parametrize("writer, readers", [({}, [(AVX2, 1), (SCALAR, 2)]), (AVX2, [({}, 2)])],
                         ids=["native->avx2,scalar", "avx2->native"])
def test_archives_extract_under_other_kernels(tmp_path, tiny_model_dir, writer, readers):
    """An lm archive written with one CPU's kernels extracts byte for byte with another's
    and another thread count (each a fresh process: kernels are chosen at start-up)."""
    import os
    import subprocess
    import sys

    archive = tmp_path / "kernels.lmz"

    def run(mode: str, env: dict, threads: int) -> None:
        env = {**os.environ, **env, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run([sys.executable, "-c", KERNEL_SCRIPT, mode, str(tiny_model_dir), str(archive)],
                              env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    run("write", writer, 2)
    for reader, threads in readers:
        run("read", reader, threads)
