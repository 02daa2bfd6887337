"""Kind memory-int (llmzip/kinds/memory_int.py against format/SPEC.md, "Kind 4",
and format/CODEC.md, "Integer vectors"): coefficient packing, the hash basis and its test
vectors, the exact rebuild, and real archives of the fixture model (round trip, export,
the offset check)."""

import dataclasses
import struct

import numpy
import pytest
import torch
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load

from llmzip import codec, container, kinds
from llmzip.errors import FormatError
from llmzip.kinds import memory_int
from llmzip.kinds.memory_int import (
    BITS,
    IntVectorChunk,
    basis,
    coefficient_bytes,
    pack_coefficients,
    parse_payload,
    qmax,
    rebuild,
    unpack_coefficients,
)
from llmzip.train import TrainConfig

torch.set_num_threads(1)

TEXT = b"The quick brown fox jumps over the lazy dog. Sphinx of black quartz, judge my vow.\n"
FAST = dict(max_steps=60, extra_steps=10, batch_size=8)


# ---------------------------------------------------------------- coefficients


@st.composite
def coefficients(draw):
    bits = draw(st.sampled_from(BITS))
    q = draw(st.lists(st.integers(-qmax(bits), qmax(bits)), min_size=1, max_size=70))
    return bits, q


@settings(max_examples=200, deadline=None)
@given(coefficients())
def test_pack_unpack_round_trip(case):
    bits, q = case
    packed = pack_coefficients(numpy.array(q), bits)
    assert len(packed) == coefficient_bytes(len(q), bits)
    assert unpack_coefficients(packed, len(q), bits).tolist() == q
    if bits == 4 and len(q) % 2:
        assert packed[-1] >> 4 == 0  # the pad nibble
    payload = IntVectorChunk(len(q), bits, 0.5, packed, 1, 1, 0, 0.0).payload
    assert parse_payload(payload, 70, "test") == (len(q), bits, 0.5, packed)


def test_packed_bytes_are_the_spec_example():
    """format/CODEC.md, "Integer vectors": int4, rank 5."""
    assert pack_coefficients(numpy.array([1, -7, 0, 7, -3]), 4) == bytes.fromhex("91700d")
    assert pack_coefficients(numpy.array([127, -127, 5]), 8) == bytes.fromhex("7f8105")
    assert pack_coefficients(numpy.array([32767, -32767, 1000]), 16) == bytes.fromhex("ff7f0180e803")
    chunk = IntVectorChunk(5, 4, 0.125, bytes.fromhex("91700d"), 1, 1, 0, 0.0)
    assert rebuild([chunk], 640, None)[0, :8].tolist() == [1.5, -0.5, 0.5, 0.5, 2.0, 1.25, -2.25, -0.25]


def test_the_default_models_offset_checksum():
    """format/CODEC.md, "Offset": settings mo of archives of the default model."""
    offset = memory_int.offset_for("89a806cfdf3c7ec5")
    assert offset.shape == (640,) and offset.dtype == numpy.float32
    assert memory_int.offset_checksum(offset) == 0xE8B95AA74E8A2D2E
    assert memory_int.offset_for("0000000000000000") is None and memory_int.offset_checksum(None) is None


@pytest.mark.parametrize("bits, raw, rank", [(4, b"\x08", 1), (8, b"\x80", 1), (16, b"\x00\x80", 1),
                                             (4, b"\x11", 1)])  # -8, -128, -32768, a non-zero pad nibble
def test_parse_refuses_the_unused_minimum_and_the_pad_nibble(bits, raw, rank):
    payload = IntVectorChunk(rank, bits, 0.5, raw, 1, 1, 0, 0.0).payload
    with pytest.raises(FormatError, match="^here: "):
        parse_payload(payload, 8, "here")


# ---------------------------------------------------------------- basis


def test_basis_test_vectors():
    """format/CODEC.md's test vectors."""
    first = basis(640, 4)
    assert first.shape == (640, 4) and first.dtype == numpy.float64
    assert first[:8].T.astype(int).tolist() == [
        [1, -1, 1, 1, -1, -1, -1, 1],
        [-1, -1, 1, -1, -1, -1, 1, 1],
        [-1, -1, 1, 1, -1, 1, -1, -1],
        [1, -1, 1, -1, 1, 1, -1, 1],
    ]
    assert first[636:, 0].astype(int).tolist() == [-1, -1, -1, 1]
    assert xxhash.xxh64_intdigest(struct.pack("<II", 0, 0), 0x6C6D7A62) == 0xAC91899C7A42EA72
    assert xxhash.xxh64_intdigest(basis(640, 64).astype("<f8").tobytes()) == 0x826E778FF90C68DA


def test_basis_is_the_bits_of_its_hashes():
    """Column j, rows 64b..64b+63: the bits of xxh64(u32le(j) u32le(b), seed 0x6c6d7a62), LSB first, 1 -> -1."""
    matrix = basis(100, 3)
    for j in range(3):
        for row in (0, 1, 63, 64, 99):
            block, bit = divmod(row, 64)
            digest = xxhash.xxh64_intdigest(struct.pack("<II", j, block), 0x6C6D7A62)
            assert matrix[row, j] == (-1.0 if digest >> bit & 1 else 1.0)


@pytest.mark.parametrize("dim, small, large", [(640, 4, 64), (64, 1, 63), (100, 7, 33)])
def test_basis_is_nested_and_plus_minus_one(dim, small, large):
    assert numpy.array_equal(basis(dim, small), basis(dim, large)[:, :small])
    assert set(numpy.unique(basis(dim, large)).tolist()) == {-1.0, 1.0}
    assert numpy.array_equal(basis(dim, large)[:50], basis(50, large))  # rows depend only on their index


def test_full_rank_basis_is_the_identity():
    """rank = d stores the vector's own coordinates (quantised)."""
    assert numpy.array_equal(basis(64, 64), numpy.eye(64)) and not basis(64, 64).flags.writeable


def test_basis_is_read_only_and_deterministic():
    matrix = basis(64, 8)
    assert not matrix.flags.writeable
    basis.cache_clear()
    assert numpy.array_equal(basis(64, 8), matrix)


# ---------------------------------------------------------------- rebuild


def random_chunks(rng, dim, count):
    chunks = []
    for _ in range(count):
        bits = int(rng.choice(BITS))
        rank = int(rng.integers(1, dim + 1))
        q = rng.integers(-qmax(bits), qmax(bits) + 1, size=rank)
        scale = float(numpy.float16(rng.uniform(2.0**-14, 4.0)))
        chunks.append(IntVectorChunk(rank, bits, scale, pack_coefficients(q, bits), 1, 1, 0, 0.0))
    return chunks


def reference(chunk, dim, offset):
    """offset + s * (P @ q) with Python integers and one float64 multiply-add per element."""
    q = [int(v) for v in unpack_coefficients(chunk.coefficients, chunk.rank, chunk.bits)]
    signs = basis(dim, chunk.rank).astype(int)
    out = []
    for row in range(dim):
        total = sum(int(signs[row, j]) * q[j] for j in range(chunk.rank))  # exact
        base = 0.0 if offset is None else float(offset[row])
        out.append(base + chunk.scale * float(total))
    return numpy.array(out, dtype=numpy.float64).astype(numpy.float32)


@pytest.mark.parametrize("with_offset", [False, True])
def test_rebuild_is_exact_and_independent_of_batching(with_offset):
    rng = numpy.random.default_rng(3)
    dim = 64
    offset = rng.normal(size=dim).astype("<f4") if with_offset else None
    chunks = random_chunks(rng, dim, 12)
    together = rebuild(chunks, dim, offset)
    assert together.dtype == numpy.float32 and together.shape == (12, dim)
    for row, chunk in enumerate(chunks):
        assert numpy.array_equal(rebuild([chunk], dim, offset)[0], together[row])
        assert numpy.array_equal(reference(chunk, dim, offset), together[row])
    order = rng.permutation(len(chunks))
    assert numpy.array_equal(rebuild([chunks[i] for i in order], dim, offset), together[order])


def test_rebuild_of_the_extremes_is_exact():
    """The largest sums (the largest hash-basis rank, every coefficient at qmax, all one
    sign) stay integers in float64."""
    dim = 640
    rank = dim - 1  # rank d is the identity
    q = basis(dim, rank)[0].astype(numpy.int64) * qmax(16)  # row 0 of P times 32767: sum 639 * 32767
    chunk = IntVectorChunk(rank, 16, 1.0, pack_coefficients(q, 16), 1, 1, 0, 0.0)
    assert rebuild([chunk], dim, None)[0, 0] == numpy.float32(rank * qmax(16))


# ---------------------------------------------------------------- real archives, fixture model


@pytest.fixture(scope="module")
def kind_4_writer():
    """The compressor stores trained vectors as kind memory-int at every width, as llmzip
    0.2.x did: it now writes memory-int-coded up to 8 bits (tests/test_memory_int_coded.py),
    but kind 4 at these widths is still read, and this module tests writing and reading it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(codec, "CODED_BITS", ())  # LmzCompressor._vector_form codes none
        yield


@pytest.fixture(scope="module")
def archives(tiny_model, kind_4_writer):
    """Archives of TEXT at each bit width, with the rank each one is made with."""
    made = {}
    for rank, bits in [(64, 2), (16, 4), (32, 8), (64, 16)]:
        compressor = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, train=TrainConfig(rank=rank, bits=bits, **FAST),
                                         train_small_inputs=True)  # TEXT is shorter than some forms' smallest vector
        made[bits] = (rank, compressor.compress(TEXT))
    return made


def int_chunks(archive):
    return [chunk for chunk in archive.chunks if kinds.of(chunk) is memory_int.KIND]


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_archive_round_trip(archives, tiny_model, bits):
    rank, data = archives[bits]
    archive = container.unpack(data)
    assert archive.version == (2, max(kinds.of(chunk).minor for chunk in archive.chunks))  # 2.2, 2.5 with raw chunks
    assert archive.version >= (2, 2)
    stored = int_chunks(archive)
    assert stored and all((chunk.rank, chunk.bits) == (rank, bits) for chunk in stored)
    assert memory_int.OFFSET_KEY not in archive.header.settings  # the fixture model has no shipped start
    assert container.read_header(data).chunk_counts["memory-int"] == len(stored)
    assert codec.LmzDecompressor(loaded=tiny_model).decompress(data) == TEXT


def test_export_writes_the_exact_full_float32_vectors(archives):
    _, data = archives[8]
    archive = container.unpack(data)
    stored = int_chunks(archive)
    vectors = load(codec.export(data))["vectors"]
    assert vectors.dtype == numpy.float32 and vectors.shape == (len(stored), archive.header.vector_dim)
    assert numpy.array_equal(vectors, rebuild(stored, archive.header.vector_dim, None))


def with_settings(data: bytes, **changes) -> bytes:
    """The archive repacked with its header settings changed (None removes a key)."""
    archive = container.unpack(data)
    settings = {key: value for key, value in {**archive.header.settings, **changes}.items() if value is not None}
    return container.pack(dataclasses.replace(archive.header, settings=settings), archive.chunks)


@pytest.fixture
def no_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded an archive that should have been refused")

    monkeypatch.setattr(memory_int.KIND, "decode", refuse)


def test_a_changed_offset_setting_is_refused_before_decoding(archives, tiny_model, no_decoding):
    _, data = archives[4]
    forged = with_settings(data, **{memory_int.OFFSET_KEY: 12345})
    with pytest.raises(FormatError, match="offset 12345"):
        codec.LmzDecompressor(loaded=tiny_model).decompress(forged)
    with pytest.raises(FormatError, match="offset 12345"):
        codec.export(forged)


def test_the_model_offset_is_recorded_and_checked(tiny_model, monkeypatch, kind_4_writer):
    """A model with a shipped start (here the fixture model, given one): its checksum is in
    settings "mo", the vectors are rebuilt around it, and an archive without "mo" or with
    another value is refused before decoding."""
    start = (numpy.random.default_rng(5).normal(size=64) * 0.05).astype("<f4")
    monkeypatch.setattr(memory_int, "offset_for", lambda fingerprint: start.copy())
    compressor = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, train=TrainConfig(rank=32, bits=8, **FAST))
    data = compressor.compress(TEXT)
    archive = container.unpack(data)
    stored = int_chunks(archive)
    assert stored
    assert archive.header.settings[memory_int.OFFSET_KEY] == xxhash.xxh64_intdigest(start.tobytes())
    assert codec.LmzDecompressor(loaded=tiny_model).decompress(data) == TEXT
    assert numpy.array_equal(load(codec.export(data))["vectors"], rebuild(stored, 64, start))

    monkeypatch.setattr(memory_int.KIND, "decode", lambda *a, **k: pytest.fail("decoded a refused archive"))
    for forged in (with_settings(data, **{memory_int.OFFSET_KEY: None}),
                   with_settings(data, **{memory_int.OFFSET_KEY: archive.header.settings[memory_int.OFFSET_KEY] ^ 1})):
        with pytest.raises(FormatError, match="offset"):
            codec.LmzDecompressor(loaded=tiny_model).decompress(forged)
