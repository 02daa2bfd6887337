"""Never bigger than it must be (issue 32; docs/DESIGN.md, invariant 10), on the fixture model.

Every archive of ``--codec lm`` and ``auto``, and of ``memory`` where it keeps no vector,
is at most min(input, zstd -19) + BOUND bytes, and restores its input. BOUND is the issue's
32 B, which format 2.6's whole-input archive keeps (format/SPEC.md, "What an archive
costs"): 26 B of magic, version, flags, header size and trailer, the empty header map and a
kind byte; so the whole input stored is its size + 28 B, and in one zstd frame the frame
python-zstandard writes at level 19 (no content checksum, as ``zstd -19 --no-check``) + its
4-byte content checksum + 28 B. (The zstd CLI writes that checksum too: against ``zstd -19``
as it comes, a zstd whole input is + 28 B.)
"""

import os
import random

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmzip import codec, container, kinds
from llmzip.train import TrainConfig

BOUND = 32
FAST = TrainConfig(max_steps=20, extra_steps=5, batch_size=8)
WORDS = "the quick brown fox jumps over lazy dog memory token vector archive model exact chunk".split()


def zstd_19(data: bytes) -> int:
    return len(zstandard.ZstdCompressor(level=19).compress(data))


def text(rng: random.Random, size: int) -> bytes:
    out = " ".join(rng.choice(WORDS) for _ in range(size // 4 + 1)).encode()
    return out[:size]


@st.composite
def inputs(draw):
    """Empty, 1 byte, random binary, text, text with binary in it; mostly small, a few up to
    64 KB (text up to 2 KB: the fixture model trains and LM-codes every byte of it)."""
    size = draw(st.one_of(st.integers(0, 300), st.integers(0, 300), st.sampled_from([1, 2048, 65_536])))
    rng = random.Random(draw(st.integers(0, 2**32)))
    shape = draw(st.sampled_from(["binary", "text", "mixed"]))
    if shape == "text":
        size = min(size, 2048)
    if shape == "binary":
        return rng.randbytes(size)
    if shape == "text":
        return text(rng, size)
    half = size // 2
    return text(rng, half) + rng.randbytes(size - half)


@pytest.fixture(scope="module")
def compressors(tiny_model):
    return {name: codec.LmzCompressor(loaded=tiny_model, codec=name, train=FAST) for name in codec.CODECS}


@pytest.fixture(scope="module")
def decompressor(tiny_model):
    return codec.LmzDecompressor(loaded=tiny_model)


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=inputs())
def test_archive_is_at_most_min_of_input_and_zstd_plus_the_bound(compressors, decompressor, data):
    limit = min(len(data), zstd_19(data)) + BOUND
    for name, compressor in compressors.items():
        archive, report = compressor.compress_with_report(data)
        assert decompressor.decompress(archive) == data, name
        if name != "memory" or report.memory_chunks == 0:
            assert len(archive) <= limit, (name, len(data), len(archive), limit)


@pytest.mark.parametrize("data", [b"", b"x", b"Hello you\n", os.urandom(100)])
def test_tiny_inputs_are_stored_whole_in_28_bytes_more(compressors, decompressor, data):
    """What the bound is made of, measured: 26 B fixed, the empty header map, the kind byte."""
    for compressor in compressors.values():
        archive = compressor.compress(data)
        assert len(archive) == len(data) + 28, (len(data), len(archive))
        assert decompressor.decompress(archive) == data


def test_a_10_byte_input_trains_nothing(tiny_model):
    compressor = codec.LmzCompressor(loaded=tiny_model, train=FAST)
    assert compressor.smallest_vector_record() == 7 + 1 + 4 + 2 * tiny_model.identity.hidden_size
    calls = []
    compressor.train_group = lambda *args, **kwargs: calls.append(args)
    archive, report = compressor.compress_with_report(b"Hello you\n")
    assert calls == [] and report.memory_chunks == 0
    assert container.read_header(archive).header.model_free


def test_the_coded_forms_lower_bound_is_below_what_training_stores(tiny_model):
    """The default model's form (640 coefficients at 4 bits, coded): the bound says no
    vector costs under ~40 B; trained ones take ~130-170 B (README)."""
    compressor = codec.LmzCompressor(loaded=tiny_model, train=TrainConfig(rank=64, bits=4))
    assert compressor.vector_kind is kinds.memory_int_lm.KIND
    assert 7 + 1 + 4 + 4 < compressor.smallest_vector_record() < 64 * 4 // 8 + 16


def test_binary_input_is_stored_whole_without_training_or_lm_coding(compressors, decompressor, monkeypatch):
    data = random.Random(3).randbytes(2000) + b"some text in the middle of it" + bytes(500)
    for name, compressor in compressors.items():
        monkeypatch.setattr(compressor, "train_group", lambda *a, **k: pytest.fail("trained binary input"))
        monkeypatch.setattr(kinds.lm.KIND, "encode", lambda *a, **k: pytest.fail("LM-coded binary input"))
        archive, report = compressor.compress_with_report(data)
        assert report.binary and report.chunks == 1 and report.fallback_chunks == 1, name
        assert len(archive) <= len(data) + BOUND
        assert decompressor.decompress(archive) == data


def test_auto_is_never_bigger_than_lm_or_memory(compressors, decompressor):
    data = (b"The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
            b"How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow.\n") * 3
    sizes = {name: len(compressor.compress(data)) for name, compressor in compressors.items()}
    assert sizes["auto"] <= min(sizes["lm"], sizes["memory"]), sizes


def test_empty_archive_is_model_free_and_at_most_the_bound(compressors, decompressor):
    """min(0, zstd -19 of nothing) + 32 = 32 B: the whole-input archive takes 28."""
    for compressor in compressors.values():
        archive = compressor.compress(b"")
        info = container.read_header(archive)
        assert len(archive) <= BOUND and info.version == (2, 6) and info.header.model_free, len(archive)
        assert decompressor.decompress(archive) == b""


def test_no_archive_holds_an_absolute_path(tiny_model_dir):
    """Compressed with the fixture model named by its absolute path: the archive records
    its directory's name at most, and extract with --model finds it by its fingerprints."""
    model = str(tiny_model_dir.resolve())
    data = (b"The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
            b"How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow.\n")
    train = TrainConfig(max_steps=60, extra_steps=10, batch_size=8)
    for name in codec.CODECS:
        compressor = codec.LmzCompressor(model=model, codec=name, train=train, chunk_tokens=16,
                                         train_small_inputs=True)
        archive = compressor.compress(data)
        for part in (model, str(tiny_model_dir.parent), "/fixtures/"):
            assert part.encode() not in archive, (name, part)
        assert codec.LmzDecompressor(model=model).decompress(archive) == data
        if name == "memory":  # its vectors need the model: the identity is there, named by its directory
            assert container.read_header(archive).header.model["i"] == tiny_model_dir.name
