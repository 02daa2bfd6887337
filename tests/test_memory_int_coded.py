"""Kind memory-int-coded (llmzip/kinds/legacy/memory_int_coded.py against format/SPEC.md,
"Kind 5", and format/CODEC.md, "Coded integer vectors"; read only): the coefficient code
and its test vectors, the canonical-code rule, the record payload, the decode forced at
corrected positions, and a real archive of the fixture model that holds corrections
(fixtures/compat/tiny-model-memory-int-coded.lmz, written by fixtures/legacy_writers.py:
round trip, export, refusals). The coded form's training (grid, sparsity) is tested with
the kind that is written, in tests/test_memory_int_lm.py."""

import dataclasses
import json
import struct
from pathlib import Path

import numpy
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load, safe_open

from llmzip import codec, container, kinds, wire
from llmzip.decode import decode, decode_batch, prompt_embeddings, top2_gap
from llmzip.errors import FormatError, LmzError
from llmzip.kinds import memory_int
from llmzip.kinds.legacy import memory_int_coded
from llmzip.kinds.legacy.memory_int_coded import (
    BITS,
    CodedIntVectorChunk,
    decode_coefficients,
    encode_coefficients,
    parse_payload,
)
from llmzip.kinds.memory_int import IntVectorChunk, pack_coefficients, qmax, rebuild
from llmzip.kinds.rangecode import pack_words, unpack_words

torch.set_num_threads(1)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
GOLDEN = FIXTURES / "golden"
ARCHIVE = FIXTURES / "compat" / "tiny-model-memory-int-coded"  # .lmz of .txt, rank 16, 4 bits, 8-token chunks


def coded(rank, bits, scale, q, corrections=(), n_tokens=1, length=1, check=0, min_margin=0.0):
    return CodedIntVectorChunk(rank, bits, scale, tuple(corrections), encode_coefficients(numpy.array(q), bits),
                               n_tokens, length, check, min_margin)


# ---------------------------------------------------------------- coefficient code


def test_bits_are_2_to_8():
    assert BITS == tuple(range(2, 9))


def test_the_kind_is_read_only():
    assert not memory_int_coded.KIND.written and memory_int_coded.KIND in kinds.KINDS


@pytest.mark.parametrize("bits, q, code", [
    (4, [1, -7, 0, 7, -3], "3b701889"),
    (8, [127, -127, 0, 1, -1, 64, -64, 5], "827efffe60d6d07833886067"),
    (2, [1, -1, 0], "923233b3"),
    (2, [0], "00555555"),
])
def test_code_test_vectors(bits, q, code):
    """format/CODEC.md, "Coded integer vectors" (the codes of golden/v2-memory_int_coded.lmz)."""
    assert encode_coefficients(numpy.array(q), bits) == bytes.fromhex(code)
    assert decode_coefficients(bytes.fromhex(code), len(q), bits).tolist() == q


def test_a_coded_vector_rebuilds_as_its_memory_int_twin():
    """Same q, scale and offset: the same float32 vector as kind 4 (CODEC.md's example)."""
    q = [1, -7, 0, 7, -3]
    twin = IntVectorChunk(5, 4, 0.125, pack_coefficients(numpy.array(q), 4), 1, 1, 0, 0.0)
    offset = numpy.random.default_rng(2).normal(size=640).astype("<f4")
    for base in (None, offset):
        assert numpy.array_equal(rebuild([coded(5, 4, 0.125, q)], 640, base), rebuild([twin], 640, base))
    assert rebuild([coded(5, 4, 0.125, q)], 640, None)[0, :8].tolist() == [1.5, -0.5, 0.5, 0.5, 2.0, 1.25, -2.25,
                                                                             -0.25]


@st.composite
def coefficient_vectors(draw, bits):
    """(k,) int64 within qmax(bits), k in 1..700: uniform, peaked at 0 like trained vectors,
    or the extremes only."""
    rank = draw(st.integers(1, 700))
    rng = numpy.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    top = qmax(bits)
    shape = draw(st.sampled_from(["uniform", "peaked", "extremes"]))
    if shape == "uniform":
        return rng.integers(-top, top + 1, size=rank)
    if shape == "peaked":
        return numpy.clip(numpy.rint(rng.laplace(scale=max(top / 6, 0.4), size=rank)), -top, top).astype(numpy.int64)
    return rng.choice([-top, top], size=rank)


@pytest.mark.parametrize("bits", BITS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_code_round_trip(bits, data):
    q = data.draw(coefficient_vectors(bits))
    code = encode_coefficients(q, bits)
    assert code and pack_words(unpack_words(code)) == code  # no trailing zero byte a writer drops
    assert decode_coefficients(code, len(q), bits).tolist() == q.tolist()


@pytest.mark.parametrize("bits", BITS)
def test_code_round_trip_at_the_lengths_ends(bits):
    top = qmax(bits)
    for q in ([top], [-top], [0], [top, -top] * 350, list(range(-top, top + 1)) * (700 // (2 * top + 1))):
        q = numpy.array(q[:700])
        assert decode_coefficients(encode_coefficients(q, bits), len(q), bits).tolist() == q.tolist()


def test_peaked_coefficients_take_fewer_bytes_than_fixed_width():
    """What the kind is for: trained-like 4-bit vectors code smaller than int4 nibbles."""
    q = numpy.clip(numpy.rint(numpy.random.default_rng(0).laplace(scale=1.2, size=640)), -7, 7).astype(numpy.int64)
    assert len(encode_coefficients(q, 4)) < 0.95 * len(pack_coefficients(q, 4))


def code_variants(code: bytes):
    """Codes that differ from ``code`` but may read as the same coefficients."""
    yield code + b"\x00"  # a zero byte the writer drops (it reads as the same words)
    yield code + b"\x00" * (-len(code) % 4) + b"\x00\x00\x00\x00"  # a whole zero word more
    yield code + b"\x01"
    yield code[:-1] + bytes([code[-1] ^ 1])  # the last word's low bits: slack in the final range
    if len(code) > 1:
        yield code[:-1]


@pytest.mark.parametrize("bits, q", [(4, [1, -7, 0, 7, -3]), (2, [0]), (8, list(range(-127, 128)))])
def test_a_code_that_is_not_canonical_is_refused(bits, q):
    """One code per vector: anything else, even one that decodes to the same coefficients,
    is refused (a damaged code must not become a different vector without notice)."""
    code = encode_coefficients(numpy.array(q), bits)
    for variant in code_variants(code):
        with pytest.raises(FormatError, match="memory-int-coded coefficients"):
            decode_coefficients(variant, len(q), bits)


def test_the_code_does_not_say_its_length():
    """The record's rank does: the same bytes can be the canonical code of vectors of two
    ranks (CODEC.md), so they are read at the stored rank and nothing else."""
    code = bytes.fromhex("3b701889")
    assert decode_coefficients(code, 5, 4).tolist() == [1, -7, 0, 7, -3]
    assert decode_coefficients(code, 6, 4).tolist() == [1, -7, 0, 7, -3, -7]
    assert encode_coefficients(numpy.array([1, -7, 0, 7, -3, -7]), 4) == code
    with pytest.raises(FormatError, match="not the one their values encode to"):
        decode_coefficients(code, 4, 4)


def test_a_padded_code_that_decodes_to_the_same_values_is_refused_by_the_canonical_rule():
    """code + 00 is the same words (the reader pads with zero bytes): it decodes to the same
    coefficients, and only the re-encoding check refuses it."""
    code = encode_coefficients(numpy.array([1, -7, 0, 7, -3]), 4)
    with pytest.raises(FormatError, match="not the one their values encode to"):
        decode_coefficients(code + b"\x00", 5, 4)


# ---------------------------------------------------------------- payload


@st.composite
def chunks(draw):
    """(a CodedIntVectorChunk with random corrections, vector_dim)."""
    vector_dim = draw(st.integers(1, 700))
    bits = draw(st.sampled_from(BITS))
    rank = draw(st.integers(1, min(vector_dim, 40)))
    q = draw(st.lists(st.integers(-qmax(bits), qmax(bits)), min_size=rank, max_size=rank))
    scale = draw(st.floats(2.0**-24, 65504.0, width=16))
    n_tokens = draw(st.integers(1, container.MAX_TOKENS_PER_CHUNK))
    count = draw(st.integers(0, min(wire.MAX_CORRECTIONS, n_tokens - 1)))
    positions = sorted(draw(st.sets(st.integers(0, n_tokens - 1), min_size=count, max_size=count)))
    tokens = draw(st.lists(st.integers(0, 2**32 - 1), min_size=count, max_size=count))
    margin = draw(st.floats(0, 100, width=32))
    return coded(rank, bits, scale, q, zip(positions, tokens), n_tokens, n_tokens, 0, margin), vector_dim


@settings(max_examples=150, deadline=None)
@given(chunks())
def test_payload_round_trip(case):
    chunk, vector_dim = case
    assert parse_payload(chunk.payload, chunk.n_tokens, vector_dim, "test") == (
        chunk.rank, chunk.bits, chunk.scale, chunk.corrections, chunk.code)
    header = container.Header(model={"k": "local"}, settings={}, vector_dim=vector_dim, input_size=chunk.length,
                              input_xxh64=0, metadata={})
    archive = container.unpack(container.pack(header, [chunk]))
    assert archive.version == (2, 3) and archive.chunks == (chunk,)


@settings(max_examples=60, deadline=None)
@given(chunks())
def test_payload_cut_before_its_code_is_refused(case):
    chunk, vector_dim = case
    payload = chunk.payload
    for end in range(len(payload) - len(chunk.code)):
        with pytest.raises(FormatError, match="^here: "):
            parse_payload(payload[:end], chunk.n_tokens, vector_dim, "here")


def test_payload_bytes():
    """SPEC.md, "Kind 5": rank, bits, scale, count, (gap, token) pairs, code."""
    chunk = coded(5, 4, 0.125, [1, -7, 0, 7, -3], [(1, 300), (4, 262143)], n_tokens=12)
    assert chunk.payload == bytes.fromhex("05" "04" "0030" "02" "01ac02" "02ffff0f" "3b701889")


@pytest.mark.parametrize("pairs, n_tokens, error", [
    ([(0, 1), (0, 2)], 5, None),  # gap 0 twice: positions 0 and 1 (a gap cannot go backwards)
    ([(3, 1)], 4, None),  # the last position
    ([(4, 1)], 4, "corrected position: 4 is over the limit 3"),
    ([(1, 1), (1, 1)], 4, None),  # positions 1 and 3
    ([(0, 1), (2, 1)], 3, "corrected position: 3 is over the limit 2"),
    ([(0, 1)], 1, "corrections: 1 is over the limit 0"),  # a 1-token chunk has no room for one
    ([(0, 1)] * 65, 66, "corrections: 65 is over the limit 64"),
])
def test_corrections_are_bounded(pairs, n_tokens, error):
    """(gap, token) pairs as stored; the positions they make must be inside the chunk, and
    there are at most min(64, n_tokens - 1) of them."""
    code = encode_coefficients(numpy.array([1, 0]), 2)
    payload = container.varint(2) + bytes([2]) + struct.pack("<e", 0.5) + container.varint(len(pairs))
    payload += b"".join(container.varint(gap) + container.varint(token) for gap, token in pairs) + code
    if error is None:
        positions = numpy.cumsum([gap + 1 for gap, _ in pairs]) - 1
        assert parse_payload(payload, n_tokens, 8, "here")[3] == tuple(
            (int(position), token) for position, (_, token) in zip(positions, pairs))
    else:
        with pytest.raises(FormatError, match=f"^here: {error}$"):
            parse_payload(payload, n_tokens, 8, "here")


def test_the_golden_archive_holds_what_the_generator_wrote():
    archive = container.unpack((GOLDEN / "v2-memory_int_coded.lmz").read_bytes())
    assert archive.version == (2, 3)
    assert [kinds.of(chunk).name for chunk in archive.chunks] == [
        "memory-int-coded", "memory-int-coded", "zstd", "memory-int", "memory-int-coded"]
    first, second, _, _, last = archive.chunks
    assert (first.rank, first.bits, first.scale, first.corrections) == (5, 4, 0.125, ((1, 300), (4, 262143)))
    assert first.code == bytes.fromhex("3b701889") and first.integers().tolist() == [1, -7, 0, 7, -3]
    assert second.corrections == () and second.integers().tolist() == [127, -127, 0, 1, -1, 64, -64, 5]
    assert (last.bits, last.corrections, last.integers().tolist()) == (2, ((0, 7),), [1, -1, 0])
    exported = codec.export((GOLDEN / "v2-memory_int_coded.lmz").read_bytes())
    rows = json.loads(safe_open_metadata(exported)["llmzip.chunks"])
    assert [row.get("corrections") for row in rows] == [[[1, 300], [4, 262143]], [], None, [[0, 7]]]
    stored = [chunk for chunk in archive.chunks if isinstance(kinds.of(chunk), memory_int.IntVectorKind)]
    assert numpy.array_equal(load(exported)["vectors"], rebuild(stored, 8, None))


def safe_open_metadata(data: bytes) -> dict:
    """The metadata of safetensors bytes."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".safetensors") as file:
        file.write(data)
        file.flush()
        with safe_open(file.name, "np") as opened:
            return opened.metadata()


# ---------------------------------------------------------------- forced decode


COUNTS = [9, 1, 14, 6]


@pytest.fixture(scope="module")
def rows(tiny_model):
    """(B, d) float32 vectors scaled like the fixture model's embeddings."""
    embed = tiny_model.model.get_input_embeddings()
    rms = embed(torch.arange(embed.weight.shape[0])).pow(2).mean().sqrt()
    generator = torch.Generator().manual_seed(29)
    return (torch.randn(len(COUNTS), tiny_model.model.config.hidden_size, generator=generator) * rms).detach()


@torch.no_grad()
def reference(model, vector, n_tokens, forced=()):
    """Batch-1 greedy decode with the forced tokens taken: (ids, each position's gap)."""
    forced = dict(forced)
    out = model(inputs_embeds=prompt_embeddings(model, vector[None]), use_cache=True)
    ids, gaps = [], []
    for step in range(n_tokens):
        logits = out.logits[0, -1].float()  # (V,)
        gaps.append(top2_gap(logits).item())
        ids.append(forced.get(step, int(logits.argmax())))
        if step + 1 < n_tokens:
            out = model(input_ids=torch.tensor([[ids[-1]]]), cache=out.cache, use_cache=True)
    return ids, gaps


def test_forcing_greedys_own_tokens_keeps_the_ids_and_drops_those_positions_from_the_margin(tiny_model, rows):
    model = tiny_model.model
    plain = decode_batch(model, rows, COUNTS)
    for row, n in enumerate(COUNTS):
        ids, gaps = reference(model, rows[row], n)
        assert plain[row].token_ids == ids
        weakest = min(range(n), key=gaps.__getitem__)
        for positions in ([weakest], list(range(0, n, 2)), list(range(n))):
            forced = [(p, ids[p]) for p in positions]
            got = decode(model, rows[row], n, forced)
            assert got.token_ids == ids
            rest = [gaps[p] for p in range(n) if p not in positions]
            expected = min(rest) if rest else float("inf")  # every position forced: no gap counts
            assert got.min_margin == pytest.approx(expected, abs=1e-5)


def test_forcing_another_token_changes_that_position_and_what_follows(tiny_model, rows):
    model = tiny_model.model
    vocab = model.get_input_embeddings().weight.shape[0]
    row, n = 2, COUNTS[2]
    ids, _ = reference(model, rows[row], n)
    for position in (0, 5, n - 1):
        token = (ids[position] + 1 + position) % vocab
        expected_ids, gaps = reference(model, rows[row], n, [(position, token)])
        got = decode(model, rows[row], n, [(position, token)])
        assert got.token_ids[position] == token != ids[position]
        assert got.token_ids[:position] == ids[:position]
        assert got.token_ids == expected_ids
        assert got.min_margin == pytest.approx(min(g for p, g in enumerate(gaps) if p != position), abs=1e-5)


def test_a_batch_without_corrections_is_the_batch_without_forced(tiny_model, rows):
    model = tiny_model.model
    plain = decode_batch(model, rows, COUNTS)
    assert decode_batch(model, rows, COUNTS, forced=[()] * len(COUNTS)) == plain
    assert decode_batch(model, rows, COUNTS, forced=None) == plain


def test_one_rows_corrections_leave_the_other_rows_alone(tiny_model, rows):
    """Forcing changes no matmul shape: the rows without corrections are bit-identical."""
    model = tiny_model.model
    plain = decode_batch(model, rows, COUNTS)
    token = (plain[2].token_ids[3] + 7) % model.get_input_embeddings().weight.shape[0]
    forced = decode_batch(model, rows, COUNTS, forced=[(), (), [(3, token)], ()])
    assert [forced[i] for i in (0, 1, 3)] == [plain[i] for i in (0, 1, 3)]
    assert forced[2].token_ids[:4] == plain[2].token_ids[:3] + [token]
    alone = decode_batch(model, rows[2:3], COUNTS[2:3], forced=[[(3, token)]])[0]
    assert forced[2].token_ids == alone.token_ids
    assert forced[2].min_margin == pytest.approx(alone.min_margin, abs=1e-4)


@pytest.mark.parametrize("forced", [
    [(), [(1, 0)], (), ()],  # row 1 has 1 token: position 1 is past its end
    [[(9, 0)], (), (), ()],
    [[(-1, 0)], (), (), ()],
    [(), (), [(0, 512)], ()],  # the fixture model's vocabulary is 512
    [(), (), [(0, -1)], ()],
    [[(0, 0)]],  # one list for four rows
])
def test_out_of_range_forced_tokens_are_refused(tiny_model, rows, forced):
    assert tiny_model.model.get_input_embeddings().weight.shape[0] == 512
    with pytest.raises(ValueError):
        decode_batch(tiny_model.model, rows, COUNTS, forced=forced)


# ---------------------------------------------------------------- real archives, fixture model


TEXT = ARCHIVE.with_suffix(".txt").read_bytes()


@pytest.fixture(scope="module")
def archive_bytes():
    """TEXT compressed at rank 16, 4 bits by the writer of kind memory-int-coded llmzip had
    (fixtures/legacy_writers.py): memory-int-coded records, some with corrections."""
    return ARCHIVE.with_suffix(".lmz").read_bytes()


def coded_chunks(archive):
    return [chunk for chunk in archive.chunks if kinds.of(chunk) is memory_int_coded.KIND]


def test_archive_round_trip_with_corrections(archive_bytes, tiny_model):
    archive = container.unpack(archive_bytes)
    assert archive.version == (2, 3)
    stored = coded_chunks(archive)
    assert stored and {kinds.of(chunk).name for chunk in archive.chunks} <= {"memory-int-coded", "zstd"}
    assert all((chunk.rank, chunk.bits) == (16, 4) for chunk in stored)
    assert any(chunk.corrections for chunk in stored), "no chunk needed a correction: pick another text or seed"
    assert all(len(chunk.corrections) < chunk.n_tokens for chunk in stored)
    assert [kinds.of(chunk).describe(chunk)["corrections"] for chunk in stored] == [len(c.corrections) for c in stored]
    assert container.read_header(archive_bytes).chunk_counts["memory-int-coded"] == len(stored)
    assert codec.LmzDecompressor(loaded=tiny_model).decompress(archive_bytes) == TEXT


def test_the_corrections_are_needed(archive_bytes, tiny_model):
    """Decoded without their corrections, corrected chunks come out different: not every
    one, since a correction may only lift a right token's gap to the margin, but some."""
    archive = container.unpack(archive_bytes)
    differ = []
    for chunk in (chunk for chunk in coded_chunks(archive) if chunk.corrections):
        vector = torch.from_numpy(rebuild([chunk], archive.header.vector_dim, None))[0]
        with_them = decode(tiny_model.model, vector, chunk.n_tokens, chunk.corrections)
        without = decode(tiny_model.model, vector, chunk.n_tokens)
        assert all(with_them.token_ids[position] == token for position, token in chunk.corrections)
        assert with_them.min_margin >= 0.25  # the verify margin, over the positions not corrected
        differ.append(with_them.token_ids != without.token_ids)
    assert any(differ)


def test_export_rows_hold_the_corrections_and_the_exact_vectors(archive_bytes):
    archive = container.unpack(archive_bytes)
    stored = coded_chunks(archive)
    exported = codec.export(archive_bytes)
    vectors = load(exported)["vectors"]
    assert vectors.dtype == numpy.float32 and vectors.shape == (len(stored), archive.header.vector_dim)
    assert numpy.array_equal(vectors, rebuild(stored, archive.header.vector_dim, None))
    rows = json.loads(safe_open_metadata(exported)["llmzip.chunks"])
    assert [row["corrections"] for row in rows] == [[list(pair) for pair in chunk.corrections] for chunk in stored]
    assert [(row["rank"], row["bits"]) for row in rows] == [(16, 4)] * len(stored)


def replaced(data: bytes, change) -> bytes:
    """The archive repacked with its first corrected chunk replaced by ``change(chunk)``
    (``container.pack`` checks the payload's layout, not the code or the tokens)."""
    archive = container.unpack(data)
    target = next(index for index, chunk in enumerate(archive.chunks) if getattr(chunk, "corrections", ()))
    chunks = list(archive.chunks)
    chunks[target] = change(chunks[target])
    return container.pack(archive.header, chunks)


@pytest.fixture
def no_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded an archive that should have been refused")

    monkeypatch.setattr(memory_int_coded.KIND, "decode", refuse)


@pytest.mark.parametrize("extra", [b"\x00", b"\x00\x00\x00\x00\x00"])
def test_a_non_canonical_code_is_refused_when_the_vectors_are_rebuilt(archive_bytes, tiny_model, extra):
    """A code that decodes to the right coefficients but is not the one they encode to:
    the container takes it (the code is opaque there), extract and export refuse it."""
    forged = replaced(archive_bytes, lambda chunk: dataclasses.replace(chunk, code=chunk.code + extra))
    chunk = next(c for c in coded_chunks(container.unpack(forged)) if c.corrections)
    with pytest.raises(FormatError, match="not the one their values encode to"):
        chunk.integers()
    with pytest.raises(FormatError, match="not the one their values encode to"):
        codec.LmzDecompressor(loaded=tiny_model).decompress(forged)
    with pytest.raises(FormatError, match="not the one their values encode to"):
        codec.export(forged)


@pytest.mark.parametrize("offset", [0, 1, 1000])
def test_a_corrected_token_outside_the_vocabulary_is_refused_before_decoding(archive_bytes, tiny_model,
                                                                           no_decoding, offset):
    vocab = container.unpack(archive_bytes).header.model["v"]
    assert vocab == 512

    def change(chunk):
        (position, _), *rest = chunk.corrections
        return dataclasses.replace(chunk, corrections=((position, vocab + offset), *rest))

    forged = replaced(archive_bytes, change)
    with pytest.raises(FormatError, match=f"corrected token {vocab + offset} .* vocabulary size 512"):
        codec.LmzDecompressor(loaded=tiny_model).decompress(forged)


def test_a_wrong_corrected_token_fails_the_chunks_check(archive_bytes, tiny_model):
    """A token inside the vocabulary but not the stored one: decoded, then caught by the check."""
    def change(chunk):
        (position, token), *rest = chunk.corrections
        return dataclasses.replace(chunk, corrections=((position, (token + 1) % 512), *rest))

    with pytest.raises(LmzError, match="checksum"):
        codec.LmzDecompressor(loaded=tiny_model).decompress(replaced(archive_bytes, change))
