"""The .lmz container (llmzip/container.py against format/SPEC.md): round trips, the
golden and hostile fixtures, the writer's refusals, and property tests that no input bytes
make the reader raise anything but an LmzError."""

import dataclasses
import re
import runpy
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmzip import errors
from llmzip.container import (
    MAX_CHUNK_LENGTH,
    MAX_TOKENS_PER_CHUNK,
    Archive,
    Header,
    checksum,
    chunk_check,
    pack,
    read_header,
    unpack,
)
from llmzip.errors import FormatError, LmzError
from llmzip.kinds.memory import MemoryChunk
from llmzip.kinds.zstd import FallbackChunk

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
GOLDEN = FIXTURES / "golden"
BAD = FIXTURES / "bad"


def bad_fixtures() -> dict:
    """name -> expected error class, from the lines of fixtures/bad/README.md."""
    lines = (BAD / "README.md").read_text().splitlines()
    matches = (re.fullmatch(r"- `(.+\.lmz)` (\w+): .+", line) for line in lines)
    return {m[1]: getattr(errors, m[2]) for m in matches if m}


def make_archive(texts_and_kinds, *, vector_dim=4, **header_fields):
    """(header, chunks) for [(text, "memory" | "zstd")], with valid checksums."""
    chunks = [
        MemoryChunk(struct.pack(f"<{vector_dim}e", *range(vector_dim)), 3, len(text), chunk_check(text), 0.25)
        if kind == "memory" else FallbackChunk(text)
        for text, kind in texts_and_kinds
    ]
    whole = b"".join(text for text, _ in texts_and_kinds)
    fields = dict(model={"source_kind": "local"}, settings={"margin": 0.5}, vector_dim=vector_dim,
                  input_size=len(whole), input_xxh64=checksum(whole), metadata={"creator": "tests"})
    return Header(**{**fields, **header_fields}), chunks


SAMPLE = [(b"First chunk. ", "memory"), (b"Second, stored with zstd. ", "zstd"), (b"Third.\n", "memory")]


# ---------------------------------------------------------------- round trips and summaries


def test_round_trip_keeps_every_field():
    header, chunks = make_archive(SAMPLE)
    assert unpack(pack(header, chunks)) == Archive((2, 0), header, tuple(chunks))


def test_consecutive_zstd_chunks_become_one_record():
    header, chunks = make_archive([(b"a" * 10, "zstd"), (b"b" * 10, "zstd"), (b"c", "memory"), (b"d", "zstd")])
    assert [(type(c).__name__, c.length) for c in unpack(pack(header, chunks)).chunks] == [
        ("FallbackChunk", 20), ("MemoryChunk", 1), ("FallbackChunk", 1)]


def test_a_run_of_zstd_chunks_is_split_at_the_chunk_length_limit():
    texts = [(bytes([65 + i]) * (MAX_CHUNK_LENGTH // 2 + 1), "zstd") for i in range(3)]
    header, chunks = make_archive(texts)
    assert [c.length for c in unpack(pack(header, chunks)).chunks] == [MAX_CHUNK_LENGTH // 2 + 1] * 3


def test_empty_input_round_trips():
    header, chunks = make_archive([])
    archive = unpack(pack(header, chunks))
    assert archive.chunks == () and archive.header.input_size == 0


def test_read_header_summarises_without_a_model():
    header, chunks = make_archive(SAMPLE)
    data = pack(header, chunks)
    info = read_header(data)
    assert info.chunk_counts == {"memory": 2, "zstd": 1}
    assert info.input_bytes == {"memory": 20, "zstd": 26}
    assert info.stored_bytes["memory"] == 2 * 8
    assert info.min_margin == 0.25
    assert info.archive_size == len(data)
    assert sum(info.stored_bytes.values()) + info.overhead_bytes == len(data)
    assert info.ratio == len(data) / 46


def test_read_header_reads_paths(tmp_path):
    path = tmp_path / "a.lmz"
    path.write_bytes(pack(*make_archive(SAMPLE)))
    assert read_header(path) == read_header(str(path)) == read_header(path.read_bytes())


@pytest.mark.parametrize("name", ["missing.lmz", "."])
def test_read_header_unreadable_path_is_an_input_error(tmp_path, name):
    with pytest.raises(errors.InputError, match="cannot read archive"):
        read_header(tmp_path / name)


def test_pack_is_canonical():
    """Same header and chunks, dicts in another order: the same bytes."""
    header, chunks = make_archive(SAMPLE, settings={"b": 1, "a": 2.5})
    reordered = Header(**{**header.__dict__, "settings": {"a": 2.5, "b": 1}})
    assert pack(header, chunks) == pack(reordered, chunks)


def test_spec_example_is_what_pack_writes():
    """The annotated 93-byte archive in format/SPEC.md, "Example"."""
    header = Header(model={"k": "local"}, settings={}, vector_dim=2, input_size=7,
                    input_xxh64=checksum(b"Hi! zz\n"), metadata={})
    vector = struct.pack("<2e", 1.0, -2.0)
    chunks = [MemoryChunk(vector, 2, 4, chunk_check(b"Hi! "), 0.5), FallbackChunk(b"zz\n")]
    assert pack(header, chunks) == bytes.fromhex(
        "894c4d5a0d0a1a0a 0200 0000 0000 20000000"
        "85 a163 02 a164 02 a16d 81 a16b a56c6f63616c a16e 07 a178 cf3225e2db42dc3c6c"
        "01 09 04 70d708c0 02 0000003f 003c00c0"
        "02 00 03 c20e1219"
        "28b52ffd2003190000 7a7a0a"
        "7cb232725d4bf309"
    )


def test_checksums_are_xxh64_and_xxh32_seed_0():
    assert checksum(b"") == 0xEF46DB3751D8E999  # the test vectors SPEC.md gives
    assert chunk_check(b"") == 0x02CC5D05
    assert chunk_check(b"", (1, 0)) == checksum(b"")


# ---------------------------------------------------------------- the writer refuses what the reader would


def _memory(**changes):
    fields = dict(vector=b"\0\0" * 4, n_tokens=1, length=4, check=chunk_check(b"abcd"), min_margin=0.5)
    return MemoryChunk(**{**fields, **changes})


@pytest.mark.parametrize(
    "chunk, error",
    [
        (_memory(vector=b"\0\0" * 3), errors.FormatError),
        (_memory(vector=b"\0\0" * 3 + b"\x00\x7c"), errors.FormatError),  # fp16 infinity
        (_memory(vector=bytearray(8)), errors.FormatError),
        (_memory(n_tokens=0), errors.FormatError),
        (_memory(n_tokens=MAX_TOKENS_PER_CHUNK + 1), errors.LimitError),
        (_memory(min_margin=-0.1), errors.FormatError),
        (_memory(min_margin=float("nan")), errors.FormatError),
        (_memory(check=1 << 32), errors.LimitError),
        (FallbackChunk(b""), errors.FormatError),
        (FallbackChunk(b"x" * (MAX_CHUNK_LENGTH + 1)), errors.LimitError),
        ("abcd", errors.FormatError),
    ],
)
def test_pack_rejects_bad_chunks(chunk, error):
    header, _ = make_archive([], input_size=getattr(chunk, "length", 0))
    with pytest.raises(error) as caught:
        pack(header, [chunk])
    assert type(caught.value) is error


@pytest.mark.parametrize(
    "fields, error",
    [
        ({"input_size": 1}, errors.FormatError),  # the chunks add up to 46
        ({"vector_dim": 0}, errors.FormatError),
        ({"model": {"nested": {"too": "deep"}}}, errors.LimitError),
        ({"model": {"x": 1.5}}, errors.FormatError),
        ({"metadata": {"n": 1}}, errors.FormatError),
        ({"metadata": {"": "empty key"}}, errors.LimitError),
        ({"metadata": {"s": "\ud800"}}, errors.FormatError),  # a lone surrogate is not UTF-8
        ({"settings": {"lr": float("inf")}}, errors.FormatError),
        ({"metadata": {f"k{i}": "v" for i in range(300)}}, errors.LimitError),
        ({"metadata": {f"k{i}": "v" * 60_000 for i in range(20)}}, errors.LimitError),  # header > 1 MiB
    ],
)
def test_pack_rejects_bad_headers(fields, error):
    header, chunks = make_archive(SAMPLE, **fields)
    with pytest.raises(error) as caught:
        pack(header, chunks)
    assert type(caught.value) is error


# ---------------------------------------------------------------- fixtures


def test_fixtures_are_regenerated_byte_for_byte(tmp_path):
    """The committed fixtures are what the generator writes now (deterministic, up to date)."""
    runpy.run_path(str(FIXTURES / "make_container_fixtures.py"))["write"](tmp_path)
    committed = sorted(p.relative_to(FIXTURES) for p in [*GOLDEN.iterdir(), *BAD.iterdir()])
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.glob("*/*"))
    assert committed == generated
    for relative in committed:
        assert (FIXTURES / relative).read_bytes() == (tmp_path / relative).read_bytes(), relative


def test_bad_fixtures_are_listed_and_many():
    on_disk = {path.name for path in BAD.glob("*.lmz")}
    assert on_disk == set(bad_fixtures())
    assert len(on_disk) >= 20


@pytest.mark.parametrize("name, error", sorted(bad_fixtures().items()))
def test_bad_fixture_raises_its_error(name, error):
    data = (BAD / name).read_bytes()
    for read in (unpack, read_header):
        with pytest.raises(LmzError) as caught:
            read(data)
        assert type(caught.value) is error, f"{read.__name__}: {caught.value}"
        assert "\n" not in str(caught.value)
    with pytest.raises(error):
        read_header(BAD / name)


@pytest.mark.parametrize("name", ["empty", "memory", "mixed", "fallback", "future_optional",
                                  "v2-empty", "v2-memory", "v2-mixed", "v2-memory_int", "v2-memory_int_offset",
                                  "v2-memory_int_coded", "v2-memory_int_lm", "v2-model_free",
                                  "v2-whole_empty", "v2-whole_stored", "v2-whole_zstd", "v2-whole_metadata"])
def test_golden_archives_unpack(name):
    data = (GOLDEN / f"{name}.lmz").read_bytes()
    archive = unpack(data)
    if archive.version[0] == 2:  # pack writes format 2 (2.0, or the minor of its latest kind)
        assert pack(archive.header, archive.chunks) == data


def test_format_1_and_2_goldens_hold_the_same_chunks():
    old, new = unpack((GOLDEN / "memory.lmz").read_bytes()), unpack((GOLDEN / "v2-memory.lmz").read_bytes())
    assert [(c.vector, c.n_tokens, c.length, c.min_margin) for c in old.chunks] == [
        (c.vector, c.n_tokens, c.length, c.min_margin) for c in new.chunks]
    assert (old.header.input_size, old.header.input_xxh64) == (new.header.input_size, new.header.input_xxh64)


def test_newer_minor_optional_parts_are_ignored():
    """future_optional.lmz is mixed.lmz as 1.3, with ignorable flags and an unknown key."""
    newer = unpack((GOLDEN / "future_optional.lmz").read_bytes())
    mixed = unpack((GOLDEN / "mixed.lmz").read_bytes())
    assert newer.version == (1, 3)
    assert (newer.header, newer.chunks) == (mixed.header, mixed.chunks)


@pytest.mark.parametrize("name, counts", [("future_kind", {"memory": 2, "zstd": 2, "kind 9": 1}),
                                          ("v2-future_kind", {"memory": 2, "zstd": 1, "kind 9": 1})])
def test_newer_minor_unknown_kind_is_described_but_not_extracted(name, counts):
    data = (GOLDEN / f"{name}.lmz").read_bytes()
    assert read_header(data).chunk_counts == counts
    with pytest.raises(errors.UnsupportedVersionError, match="kind 9"):
        unpack(data)


def test_read_header_does_not_import_torch():
    """The issue's done-when check, in a fresh interpreter."""
    code = (
        "import llmzip, sys; llmzip.read_header('fixtures/golden/mixed.lmz'); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# ---------------------------------------------------------------- properties

_keys = st.text(min_size=1, max_size=8)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_none_int_or_text = st.none() | st.integers(-(1 << 63), (1 << 64) - 1) | st.text(max_size=20)


@st.composite
def archives(draw):
    """A random valid (header, chunks)."""
    dim = draw(st.integers(1, 16))
    fp16 = st.floats(width=16, allow_nan=False, allow_infinity=False)
    memory = st.builds(
        MemoryChunk,
        vector=st.lists(fp16, min_size=dim, max_size=dim).map(lambda v: struct.pack(f"<{dim}e", *v)),
        n_tokens=st.integers(1, MAX_TOKENS_PER_CHUNK),
        length=st.integers(1, MAX_CHUNK_LENGTH),
        check=st.integers(0, (1 << 32) - 1),
        min_margin=st.floats(min_value=0, allow_infinity=False, width=32),  # format 2 stores f32
    )
    fallback = st.builds(FallbackChunk, st.binary(min_size=1, max_size=300))
    chunks = draw(st.lists(st.one_of(memory, fallback), max_size=8))
    header = Header(
        model=draw(st.dictionaries(_keys, _none_int_or_text, max_size=6)),
        settings=draw(st.dictionaries(_keys, _none_int_or_text | st.booleans() | _floats, max_size=6)),
        vector_dim=dim,
        input_size=sum(chunk.length for chunk in chunks),
        input_xxh64=draw(st.integers(0, (1 << 64) - 1)),
        metadata=draw(st.dictionaries(_keys, st.text(max_size=30), max_size=4)),
    )
    return header, chunks


@settings(max_examples=150, deadline=1000)
@given(archives())
def test_property_round_trip(archive):
    header, chunks = archive
    data = pack(header, chunks)
    merged = []  # what pack stores: consecutive zstd chunks as one
    for chunk in chunks:
        if merged and isinstance(chunk, FallbackChunk) and isinstance(merged[-1], FallbackChunk):
            merged[-1] = FallbackChunk(merged[-1].data + chunk.data)
        else:
            merged.append(chunk)
    assert unpack(data) == Archive((2, 0), header, tuple(merged))
    info = read_header(data)
    assert sum(info.chunk_counts.values()) == len(merged)
    assert sum(info.stored_bytes.values()) + info.overhead_bytes == len(data)


_SEEDS = [(GOLDEN / f"{name}.lmz").read_bytes()
          for name in ("mixed", "memory", "empty", "future_kind", "v2-mixed", "v2-memory", "v2-empty", "v2-future_kind",
                       "v2-memory_int", "v2-memory_int_offset", "v2-memory_int_coded", "v2-memory_int_lm")]
_mutation = st.tuples(st.sampled_from(["flip", "set", "delete", "insert", "truncate"]),
                      st.floats(0, 1, exclude_max=True), st.integers(0, 255))


def _mutate(data: bytes, mutations, reseal: bool) -> bytes:
    buffer = bytearray(data)
    for op, where, value in mutations:
        at = int(where * len(buffer)) if buffer else 0
        if op == "insert":
            buffer.insert(at, value)
        elif not buffer:
            continue
        elif op == "flip":
            buffer[at] ^= 1 << (value % 8)
        elif op == "set":
            buffer[at] = value
        elif op == "delete":
            del buffer[at]
        else:
            del buffer[at:]
    if reseal and len(buffer) >= 8:  # recompute the trailer so the damage reaches the parser
        buffer[-8:] = struct.pack("<Q", checksum(bytes(buffer[:-8])))
    return bytes(buffer)


@settings(max_examples=400, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_SEEDS), st.lists(_mutation, min_size=1, max_size=4), st.booleans())
def test_property_mutations_raise_only_lmz_errors(seed, mutations, reseal):
    data = _mutate(seed, mutations, reseal)
    for read in (unpack, read_header):
        try:
            read(data)
        except LmzError as exc:
            assert "\n" not in str(exc)


# ---------------------------------------------------------------- format 2.5: stored, model-free (issue 32)


def model_free_header(size: int = 0) -> Header:
    return Header(model={}, settings={}, vector_dim=None, input_size=size, input_xxh64=None, metadata={})


def test_a_model_free_archive_records_no_model_and_its_chunks_in_records():
    """Format 2.5's records form, which pack still writes when a model-free archive mixes
    stored and zstd chunks: 26 B fixed, the header {c, n}, a record a chunk."""
    from llmzip.kinds.stored import StoredChunk

    stored, squeezed = b"abc\x00\xff" * 3, b"zstd " * 20
    archive = pack(model_free_header(len(stored) + len(squeezed)), [StoredChunk(stored), FallbackChunk(squeezed)])
    unpacked = unpack(archive)
    assert unpacked.version == (2, 5) and archive[10:12] == b"\x01\x00"  # must-understand MODEL_FREE
    assert unpacked.header.input_xxh64 == checksum(stored + squeezed)  # computed by the reader
    assert [chunk.data for chunk in unpacked.chunks] == [stored, squeezed]


# ---------------------------------------------------------------- format 2.6: whole-input archives (issue 32)


def test_the_empty_input_is_a_28_byte_whole_input_archive():
    empty = pack(model_free_header(), [])
    assert len(empty) == 28 and empty[8:12] == b"\x02\x06\x03\x00"  # 2.6, MODEL_FREE | WHOLE_INPUT
    assert empty[18:20] == b"\x80\x07"  # the empty header map, kind stored, no bytes
    assert empty == (GOLDEN / "v2-whole_empty.lmz").read_bytes()
    assert empty.hex() == "894c4d5a0d0a1a0a02060300000001000000800712820d0e7bc72968"  # SPEC.md's example
    assert unpack(empty).chunks == () and unpack(empty).header.input_xxh64 == checksum(b"")


def test_a_whole_input_costs_28_bytes_stored_and_the_frame_plus_its_checksum_and_28_in_zstd():
    """What min(input, zstd -19) + 32 B rests on (format/SPEC.md, "What an archive costs")."""
    import zstandard
    from llmzip.kinds.stored import StoredChunk

    data = b"abc\x00\xff" * 300
    stored = pack(model_free_header(2 * len(data)), [StoredChunk(data), StoredChunk(data)])
    assert len(stored) == 28 + 2 * len(data)
    assert [chunk.data for chunk in unpack(stored).chunks] == [2 * data]  # one payload
    squeezed = pack(model_free_header(2 * len(data)), [FallbackChunk(data), FallbackChunk(data)])
    plain_frame = zstandard.ZstdCompressor(level=19).compress(2 * data)  # what zstd -19 --no-check writes
    assert len(squeezed) == 28 + len(plain_frame) + 4
    assert unpack(squeezed).header.input_xxh64 == checksum(2 * data)


def test_a_whole_input_beyond_the_chunk_length_limit_is_one_payload():
    from llmzip.kinds.stored import StoredChunk

    data = bytes(range(256)) * (MAX_CHUNK_LENGTH // 256) + b"tail"
    pieces = [data[:MAX_CHUNK_LENGTH], data[MAX_CHUNK_LENGTH:]]
    for kind in (StoredChunk, FallbackChunk):
        archive = unpack(pack(model_free_header(len(data)), [kind(piece) for piece in pieces]))
        assert archive.version == (2, 6) and [chunk.data for chunk in archive.chunks] == [data]


@pytest.mark.parametrize("name", ["v2-whole_stored", "v2-whole_zstd"])
def test_every_bit_flip_and_truncation_of_a_whole_input_archive_is_caught(name):
    """Whole-input archives record no per-chunk xxh32: the trailer's xxh64 covers every byte
    (the stored input itself), and a zstd frame's content checksum the bytes it restores.
    Each of these changes must raise, never return bytes."""
    data = (GOLDEN / f"{name}.lmz").read_bytes()
    for bit in range(8 * len(data)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(LmzError):
            unpack(bytes(flipped))
    for size in range(len(data)):
        with pytest.raises(LmzError):
            unpack(data[:size])


def test_a_2_5_reader_refuses_a_whole_input_archive_as_too_new(monkeypatch):
    """What a reader that knows only MODEL_FREE does (llmzip before 2.6): the unknown
    must-understand bit 1 is refused before the trailer, never reported as corruption."""
    from llmzip import container

    monkeypatch.setattr(container, "MUST_UNDERSTAND_FLAGS", {container.MODEL_FREE: (2, 5)})
    for name in ("v2-whole_empty", "v2-whole_stored", "v2-whole_zstd"):
        with pytest.raises(errors.UnsupportedVersionError, match="must-understand flags 0x0002"):
            unpack((GOLDEN / f"{name}.lmz").read_bytes())


def test_a_model_free_header_cannot_hold_a_chunk_that_needs_the_model():
    header, chunks = make_archive(SAMPLE)
    free = dataclasses.replace(header, model={}, vector_dim=None, input_xxh64=None)
    with pytest.raises(FormatError, match="model-free"):
        pack(free, chunks)
