"""Kind memory-int-lm (llmzip/kinds/memory_int_lm.py against format/SPEC.md, "Kind 6",
and format/CODEC.md, "Corrections coded by the model"): the record payload and its bounds,
the corrected tokens coded and decoded under the model's logits during the decode, the
one-code rule for them, and real archives of the fixture model (round trip, export,
refusals)."""

import dataclasses
import json

import constriction
import numpy
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load

from llmzip import codec, container, kinds
from llmzip.decode import decode, decode_batch
from llmzip.corrections import Corrections
from llmzip.errors import FormatError, LimitError, LmzError
from llmzip.forms import LmCorrectedVectorForm
from llmzip.kinds import memory_int, memory_int_lm
from llmzip.kinds.memory_int import rebuild
from llmzip.kinds.memory_int_lm import (CodingTokens, DecodedTokens, LmCorrectedVectorChunk, parse_payload,
                                        write_coefficients, write_flags)
from llmzip.kinds.rangecode import pack_words
from llmzip.train import TrainConfig

torch.set_num_threads(1)

TEXT = b"The quick brown fox jumps over the lazy dog. Sphinx of black quartz, judge my vow.\n"
FAST = dict(max_steps=60, extra_steps=10, batch_size=8)


Q = (1, -7, 0, 7, -3)


def code_of(q=Q, positions=(), n_tokens=8, bits=4) -> bytes:
    """The code of a record's coefficients and flags (its tokens, which need the model's
    logits, would follow)."""
    coder = constriction.stream.queue.RangeEncoder()
    write_coefficients(coder, numpy.array(q), bits)
    write_flags(coder, positions, n_tokens)
    return pack_words(coder.get_compressed())


def chunk_with(code=None, n_tokens=8, q=Q) -> LmCorrectedVectorChunk:
    return LmCorrectedVectorChunk(len(q), 4, 0.125, code_of(q, (), n_tokens) if code is None else code,
                                  n_tokens, n_tokens, 0, 0.0)


# ---------------------------------------------------------------- payload


def test_payload_example():
    """format/SPEC.md, "Kind 6": rank 5, 4 bits, scale 0.125, q = (1, -7, 0, 7, -3), 8
    tokens, no corrections."""
    chunk = chunk_with()
    assert chunk.code == bytes.fromhex("3b 70 18 89")
    assert chunk.payload == bytes.fromhex("05 04 00 30 3b 70 18 89")
    assert parse_payload(chunk.payload, 640, "t") == (5, 4, 0.125, chunk.code)
    assert chunk.integers().tolist() == list(Q) and chunk.positions == ()


def test_the_flags_give_the_corrected_positions():
    assert chunk_with(code_of(positions=(1, 4))).positions == (1, 4)
    assert chunk_with(code_of(positions=(0, 6), n_tokens=7), n_tokens=7).positions == (0, 6)


def test_a_record_may_not_correct_every_position():
    with pytest.raises(FormatError, match="corrects 8 of its 8 positions"):
        chunk_with(code_of(positions=range(8))).positions
    assert len(chunk_with(code_of(positions=range(7))).positions) == 7


@pytest.mark.parametrize("payload, error, message", [
    ("05 04 00 30", FormatError, "has no code"),
    ("05 09 00 30 3b 70 18 89", FormatError, "bits per coefficient 9"),
    ("05 01 00 30 3b 70 18 89", FormatError, "bits per coefficient 1"),
    ("00 04 00 30 3b 70 18 89", FormatError, "rank: 0 is below the minimum 1"),
    ("05 04 00", FormatError, "inside its scale"),
    ("05 04 00 7c 3b 70 18 89", FormatError, "scale"),  # +infinity
])
def test_payload_bounds(payload, error, message):
    with pytest.raises(error, match=message):
        parse_payload(bytes.fromhex(payload), 640, "t")


# ---------------------------------------------------------------- corrections coded under the model


@pytest.fixture(scope="module")
def rows(tiny_model):
    generator = torch.Generator().manual_seed(3)
    rms = tiny_model.model.get_input_embeddings().weight.pow(2).mean().sqrt()
    return torch.randn(3, tiny_model.model.config.hidden_size, generator=generator) * rms  # (3, d)


def coded_rows(model, rows, counts, pairs):
    """Each row's record as the writer codes it during the decode: (decode results, chunks)."""
    writers = [CodingTokens(chunk_with(n_tokens=n), row) for row, n in zip(pairs, counts)]
    written = decode_batch(model, rows, counts, forced=writers)
    chunks = [LmCorrectedVectorChunk(*parse_payload(writer.finish(b""), 640, "t"), n, n, 0, 0.0)
              for writer, n in zip(writers, counts)]
    return written, chunks


def test_coded_corrections_decode_to_the_tokens_they_coded(tiny_model, rows):
    """The writer takes the chunk's tokens and codes them from the decode's logits; the
    reader, in the same decode, gets the same tokens back from the record's code alone."""
    counts = [6, 9, 4]
    greedy = decode_batch(tiny_model.model, rows, counts)
    pairs = [[(1, 7), (4, 300)], [(0, (greedy[1].token_ids[0] + 1) % 512)], []]
    written, chunks = coded_rows(tiny_model.model, rows, counts, pairs)
    assert [chunk.positions for chunk in chunks] == [(1, 4), (0,), ()]
    assert all(chunk.integers().tolist() == list(Q) for chunk in chunks)
    readers = [DecodedTokens(chunk) for chunk in chunks]
    read = decode_batch(tiny_model.model, rows, counts, forced=readers)
    assert read == written == decode_batch(tiny_model.model, rows, counts, forced=[Corrections(row) for row in pairs])
    assert not any(reader.failed for reader in readers)
    assert all(read[i].token_ids[p] == t for i, row in enumerate(pairs) for p, t in row)


@pytest.mark.parametrize("change, same_tokens", [
    (lambda code: code + b"\x00\x00\x00\x00", True),  # a zero word more: the same tokens, not their code
    (lambda code: code[:-1] + bytes([code[-1] ^ 0x80]), False),  # the last byte's top bit flipped
    (lambda code: code[:-1], False),  # the last byte cut
], ids=["zero word appended", "last bit flipped", "last byte cut"])
def test_a_code_that_is_not_the_records_code_fails_the_row(tiny_model, rows, change, same_tokens):
    """Each change leaves the coefficients and flags readable, so the reader is built and
    the decode runs; the row must then be marked failed by the one-code rule (the symbols
    read, coded again, do not give the stored code), whether or not the corrected tokens it
    decoded are still the written ones: with a zero word appended they are, and only that
    rule catches it."""
    counts = [6]
    _, [chunk] = coded_rows(tiny_model.model, rows[:1], counts, [[(1, 7), (4, 300)]])
    reader = DecodedTokens(dataclasses.replace(chunk, code=change(chunk.code)))
    assert not reader.failed  # nothing is judged before the last corrected position
    read = decode_batch(tiny_model.model, rows[:1], counts, forced=[reader])[0]
    assert reader.failed
    assert not reader.decoder.failed  # every symbol decoded: the failure is the code check's
    assert ([read.token_ids[1], read.token_ids[4]] == [7, 300]) is same_tokens


def test_a_record_without_corrections_is_checked_before_the_decode():
    reader = DecodedTokens(chunk_with(code_of() + b"\x00\x00\x00\x01"))
    assert reader.positions == frozenset() and reader.failed
    assert not DecodedTokens(chunk_with()).failed


# ---------------------------------------------------------------- real archives, fixture model


@pytest.fixture(scope="module")
def archive_bytes(tiny_model):
    """TEXT compressed at rank 16, 4 bits (the compressor's kind for coded widths), with
    corrections: the hybrid form, whose corrected tokens this file's tests decode."""
    train = TrainConfig(rank=16, bits=4, corrections=40, **FAST)
    compressor = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, train=train)
    return compressor.compress(TEXT)


def lm_chunks(archive):
    return [chunk for chunk in archive.chunks if kinds.of(chunk) is memory_int_lm.KIND]


def test_archive_round_trip_with_corrections(archive_bytes, tiny_model):
    archive = container.unpack(archive_bytes)
    assert archive.version == (2, 4)
    stored = lm_chunks(archive)
    assert stored and {kinds.of(chunk).name for chunk in archive.chunks} <= {"memory-int-lm", "zstd", "lm"}
    assert all((chunk.rank, chunk.bits) == (16, 4) for chunk in stored)
    assert any(chunk.positions for chunk in stored), "no chunk needed a correction: pick another text or seed"
    assert container.read_header(archive_bytes).chunk_counts["memory-int-lm"] == len(stored)
    assert codec.LmzDecompressor(loaded=tiny_model).decompress(archive_bytes) == TEXT


def test_the_corrections_are_needed(archive_bytes, tiny_model):
    """Decoded without their corrections, corrected chunks come out different: not every
    one, since a correction may only lift a right token's gap to the margin, but some."""
    archive = container.unpack(archive_bytes)
    differ = []
    for chunk in (chunk for chunk in lm_chunks(archive) if chunk.positions):
        vector = torch.from_numpy(rebuild([chunk], archive.header.vector_dim, None))[0]
        with_them = decode(tiny_model.model, vector, chunk.n_tokens, DecodedTokens(chunk))
        without = decode(tiny_model.model, vector, chunk.n_tokens)
        assert with_them.min_margin >= 0.25  # the verify margin, over the positions not corrected
        differ.append(with_them.token_ids != without.token_ids)
    assert any(differ)


def test_export_rows_hold_the_corrected_positions_and_the_exact_vectors(archive_bytes, tmp_path):
    archive = container.unpack(archive_bytes)
    stored = lm_chunks(archive)
    exported = tmp_path / "vectors.safetensors"
    exported.write_bytes(codec.export(archive_bytes))
    assert numpy.array_equal(load(exported.read_bytes())["vectors"], rebuild(stored, archive.header.vector_dim, None))
    with safe_open(exported, "np") as opened:
        rows = json.loads(opened.metadata()["llmzip.chunks"])
    assert [row["corrected_positions"] for row in rows] == [list(chunk.positions) for chunk in stored]


def replaced(data: bytes, change) -> bytes:
    """The archive repacked with its first corrected chunk replaced by ``change(chunk)``."""
    archive = container.unpack(data)
    target = next(index for index, chunk in enumerate(archive.chunks) if getattr(chunk, "positions", ()))
    chunks = list(archive.chunks)
    chunks[target] = change(chunks[target])
    return container.pack(archive.header, chunks)


def test_no_bit_flip_at_the_end_of_a_code_restores_wrong_bytes(archive_bytes, tiny_model):
    """Every single-bit change in the last 8 bytes of the first corrected chunk's code
    (where its flags and tokens are; the container cannot check them): extract refuses
    it, never restores other bytes, even where the change decodes to the same tokens."""
    archive = container.unpack(archive_bytes)
    target = next(index for index, chunk in enumerate(archive.chunks) if getattr(chunk, "positions", ()))
    code = archive.chunks[target].code
    decompressor = codec.LmzDecompressor(loaded=tiny_model)
    refused, tried = 0, range(8 * max(0, len(code) - 8), 8 * len(code))
    for bit in tried:
        flipped = bytearray(code)
        flipped[bit // 8] ^= 1 << bit % 8
        chunks = list(archive.chunks)
        chunks[target] = dataclasses.replace(chunks[target], code=bytes(flipped))
        with pytest.raises(LmzError):
            decompressor.decompress(container.pack(archive.header, chunks))
        refused += 1
    assert refused == len(tried) > 0


def test_a_longer_code_with_the_same_symbols_is_refused(archive_bytes, tiny_model):
    forged = replaced(archive_bytes, lambda chunk: dataclasses.replace(chunk, code=chunk.code + b"\x00\x00\x00\x00"))
    with pytest.raises(LmzError):
        codec.LmzDecompressor(loaded=tiny_model).decompress(forged)


def test_too_many_corrected_positions_are_refused_before_decoding(archive_bytes, tiny_model, monkeypatch):
    """A code whose flags correct every position: refused before the model runs."""
    def every_position(chunk):
        coder = constriction.stream.queue.RangeEncoder()
        write_coefficients(coder, chunk.integers(), chunk.bits)
        write_flags(coder, range(chunk.n_tokens), chunk.n_tokens)
        return dataclasses.replace(chunk, code=pack_words(coder.get_compressed()))

    forged = replaced(archive_bytes, every_position)
    monkeypatch.setattr(memory_int_lm.KIND, "decode", lambda *a, **k: pytest.fail("decoded a refused archive"))
    with pytest.raises(FormatError, match="corrects .* positions"):
        codec.LmzDecompressor(loaded=tiny_model).decompress(forged)


def test_describe_counts_the_corrected_positions(archive_bytes):
    archive = container.unpack(archive_bytes)
    for chunk in lm_chunks(archive):
        row = memory_int_lm.KIND.describe(chunk)
        assert row == {"kind": "memory-int-lm", "length": chunk.length, "stored_bytes": len(chunk.payload),
                       "tokens": chunk.n_tokens, "margin": chunk.min_margin, "corrections": len(chunk.positions),
                       "standalone": not chunk.positions}


def test_a_chunk_short_everywhere_does_not_make_compress_fail(tiny_model):
    """A training margin no chunk reaches and a correction allowed per step: chunks of at
    most 8 tokens stop with every position short. Compress must still write an archive
    (storing such a chunk another way, or with at most n_tokens - 1 corrections)."""
    train = TrainConfig(rank=2, bits=2, max_steps=5, extra_steps=0, batch_size=8, margin=50.0, corrections=40,
                        correction_steps=1)
    data = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, train=train).compress(b"Hello there, general Kenobi.\n")
    assert codec.LmzDecompressor(loaded=tiny_model).decompress(data) == b"Hello there, general Kenobi.\n"


# ---------------------------------------------------------------- the grid made for the code


def test_a_fixed_grid_quantises_every_vector_to_its_step():
    form = LmCorrectedVectorForm(64, 4, None, 64, grid=0.1)
    z = torch.tensor([[0.04, -0.26, 5.0] + [0.0] * 61, [0.31] * 64])  # (2, 64)
    scale, q = form._quantise(z)
    assert scale.flatten().tolist() == [memory_int.fp16_scale(0.1)] * 2
    assert q[0, :3].tolist() == [0, -3, 7] and q[1, 0] == 3  # rounded to the step, clamped at qmax
    assert form.penalty(z) == 0.0  # no pull without sparsity


def test_sparsity_needs_a_grid_and_both_are_non_negative(tiny_model):
    with pytest.raises(ValueError, match="sparsity only with a grid"):
        LmCorrectedVectorForm(64, 4, None, 64, sparsity=1.0)
    with pytest.raises(ValueError, match="grid and sparsity"):
        TrainConfig(grid=-1.0)
    with pytest.raises(LmzError, match="sparsity only with a grid"):
        codec.LmzCompressor(loaded=tiny_model, train=TrainConfig(rank=64, bits=4, sparsity=1.0))


def test_the_pull_towards_the_offset_leaves_more_coefficients_at_zero(tiny_model):
    """The same chunks trained on one fixed grid, without and with the sparsity pull: the
    pull leaves more coefficients at 0, and the archive still extracts exactly."""
    zeros = {}
    for sparsity in (0.0, 4.0):
        train = TrainConfig(rank=64, bits=4, grid=0.05, sparsity=sparsity, **FAST)
        data = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, train=train).compress(TEXT)
        stored = lm_chunks(container.unpack(data))
        assert stored and all(chunk.scale == memory_int.fp16_scale(0.05) for chunk in stored)
        assert codec.LmzDecompressor(loaded=tiny_model).decompress(data) == TEXT
        zeros[sparsity] = sum(int((chunk.integers() == 0).sum()) for chunk in stored)
    assert zeros[4.0] > zeros[0.0]
