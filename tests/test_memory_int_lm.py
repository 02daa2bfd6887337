"""Kind memory-int-lm (llmzip/kinds/memory_int_lm.py against format/SPEC.md, "Kind 6",
and format/CODEC.md, "Corrections coded by the model"): the record payload and its bounds,
the corrected tokens coded and decoded under the model's logits during the decode, the
one-code rule for them, and real archives of the fixture model (round trip, export,
refusals)."""

import dataclasses
import json

import numpy
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load

from llmzip import codec, container, kinds
from llmzip.decode import decode, decode_batch
from llmzip.errors import FormatError, LimitError, LmzError
from llmzip.kinds import memory_int_lm
from llmzip.kinds.memory import Corrections
from llmzip.kinds.memory_int import rebuild
from llmzip.kinds.memory_int_coded import encode_coefficients
from llmzip.kinds.memory_int_lm import CodingTokens, DecodedTokens, LmCorrectedVectorChunk, parse_payload
from llmzip.train import TrainConfig

torch.set_num_threads(1)

TEXT = b"The quick brown fox jumps over the lazy dog. Sphinx of black quartz, judge my vow.\n"
FAST = dict(max_steps=60, extra_steps=10, batch_size=8)


def chunk_with(positions=(1, 4), tokens=b"\x12\x34", n_tokens=8, q=(1, -7, 0, 7, -3)):
    return LmCorrectedVectorChunk(len(q), 4, 0.125, tuple(positions), encode_coefficients(numpy.array(q), 4), tokens,
                                  n_tokens, 8, 0, 0.0)


# ---------------------------------------------------------------- payload


def test_payload_example():
    """format/SPEC.md, "Kind 6": rank 5, 4 bits, scale 0.125, q = (1, -7, 0, 7, -3),
    corrections at 1 and 4, token code 12 34."""
    payload = chunk_with().payload
    assert payload == bytes.fromhex("05 04 00 30 02 01 02 04 3b 70 18 89 12 34")
    assert parse_payload(payload, 8, 640, "t") == (5, 4, 0.125, (1, 4), bytes.fromhex("3b701889"), b"\x12\x34")


def test_a_record_without_corrections_has_no_token_code():
    payload = chunk_with(positions=(), tokens=b"").payload
    assert payload == bytes.fromhex("05 04 00 30 00 04 3b 70 18 89")
    assert parse_payload(payload, 8, 640, "t")[3:] == ((), bytes.fromhex("3b701889"), b"")


@pytest.mark.parametrize("payload, error, message", [
    ("05 04 00 30 02 01 02 04 3b 70 18 89", FormatError, "2 corrections has 0 B of token code"),
    ("05 04 00 30 00 04 3b 70 18 89 12", FormatError, "0 corrections has 1 B of token code"),
    ("05 04 00 30 00 00 3b 70 18 89", FormatError, "coefficient code of 0 B"),
    ("05 04 00 30 00 05 3b 70 18 89", FormatError, "coefficient code of 5 B"),
    ("05 04 00 30 02 01", FormatError, "correction position"),
    ("05 04 00 30 02 01 06 04 3b 70 18 89 12", LimitError, "corrected position"),  # 1 + 6 + 1 = 8: past 8 tokens
    ("05 04 00 30 08 00 00 00 00 00 00 00 00 04 3b 70 18 89 12", LimitError, "corrections"),  # 8 of 8 tokens
    ("05 04 00 30 01 00", FormatError, "coefficient code size"),
    ("05 09 00 30 00 04 3b 70 18 89", FormatError, "bits per coefficient 9"),
    ("05 04 00", FormatError, "inside its scale"),
])
def test_payload_bounds(payload, error, message):
    with pytest.raises(error, match=message):
        parse_payload(bytes.fromhex(payload), 8, 640, "t")


# ---------------------------------------------------------------- tokens coded under the model


@pytest.fixture(scope="module")
def rows(tiny_model):
    generator = torch.Generator().manual_seed(3)
    rms = tiny_model.model.get_input_embeddings().weight.pow(2).mean().sqrt()
    return torch.randn(3, tiny_model.model.config.hidden_size, generator=generator) * rms  # (3, d)


def test_coded_corrections_decode_to_the_tokens_they_coded(tiny_model, rows):
    """The writer takes the chunk's tokens and codes them from the decode's logits; the
    reader, in the same decode, gets the same tokens back from that code alone."""
    counts = [6, 9, 4]
    greedy = decode_batch(tiny_model.model, rows, counts)
    pairs = [[(1, 7), (4, 300)], [(0, (greedy[1].token_ids[0] + 1) % 512)], []]
    writers = [CodingTokens(row) for row in pairs]
    written = decode_batch(tiny_model.model, rows, counts, forced=writers)
    payloads = [writer.finish(b"") for writer in writers]
    assert all(payloads[:2]) and payloads[2] == b""
    readers = [DecodedTokens(chunk_with(positions=[p for p, _ in row], tokens=code, n_tokens=n))
               for row, code, n in zip(pairs, payloads, counts)]
    read = decode_batch(tiny_model.model, rows, counts, forced=readers)
    assert read == written == decode_batch(tiny_model.model, rows, counts, forced=[Corrections(row) for row in pairs])
    assert not any(reader.failed for reader in readers)
    assert all(read[i].token_ids[p] == t for i, row in enumerate(pairs) for p, t in row)


@pytest.mark.parametrize("change", [
    lambda code: code + b"\x00\x00\x00\x00",  # a zero word more: the same tokens, not their code
    lambda code: code[:-1] + bytes([code[-1] ^ 0x80]),
    lambda code: bytes([code[0] ^ 0x01]) + code[1:],
])
def test_a_token_code_that_is_not_the_tokens_code_fails_the_row(tiny_model, rows, change):
    counts = [6]
    writer = CodingTokens([(1, 7), (4, 300)])
    decode_batch(tiny_model.model, rows[:1], counts, forced=[writer])
    code = change(writer.finish(b""))
    reader = DecodedTokens(chunk_with(positions=(1, 4), tokens=code, n_tokens=6))
    read = decode_batch(tiny_model.model, rows[:1], counts, forced=[reader])[0]
    assert reader.failed or [read.token_ids[1], read.token_ids[4]] != [7, 300]


# ---------------------------------------------------------------- real archives, fixture model


@pytest.fixture(scope="module")
def archive_bytes(tiny_model):
    """TEXT compressed at rank 16, 4 bits (the compressor's kind for coded widths)."""
    compressor = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, train=TrainConfig(rank=16, bits=4, **FAST))
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
    assert all(bool(chunk.tokens) == bool(chunk.positions) for chunk in stored)
    assert container.read_header(archive_bytes).chunk_counts["memory-int-lm"] == len(stored)
    assert codec.LmzDecompressor(loaded=tiny_model).decompress(archive_bytes) == TEXT


def test_the_corrections_are_needed(archive_bytes, tiny_model):
    """Decoded without its corrections, a corrected chunk comes out different."""
    archive = container.unpack(archive_bytes)
    chunk = next(chunk for chunk in lm_chunks(archive) if chunk.positions)
    vector = torch.from_numpy(rebuild([chunk], archive.header.vector_dim, None))[0]
    with_them = decode(tiny_model.model, vector, chunk.n_tokens, DecodedTokens(chunk))
    without = decode(tiny_model.model, vector, chunk.n_tokens)
    assert with_them.token_ids != without.token_ids
    assert with_them.min_margin >= 0.25  # the verify margin, over the positions not corrected


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


@pytest.mark.parametrize("change", [
    lambda chunk: dataclasses.replace(chunk, tokens=chunk.tokens + b"\x00\x00\x00\x00"),
    lambda chunk: dataclasses.replace(chunk, tokens=bytes([chunk.tokens[0] ^ 0x40]) + chunk.tokens[1:]),
    lambda chunk: dataclasses.replace(chunk, positions=tuple(p + 1 for p in chunk.positions[:-1]) + chunk.positions[-1:])
    if len(chunk.positions) > 1 else dataclasses.replace(chunk, positions=(chunk.positions[0] ^ 1,)),
])
def test_a_changed_token_code_or_position_is_refused(archive_bytes, tiny_model, change):
    """Extract never writes what a forged correction decodes to: the row fails its
    one-code check or its chunk's checksum."""
    with pytest.raises(LmzError):
        codec.LmzDecompressor(loaded=tiny_model).decompress(replaced(archive_bytes, change))


def test_no_bit_flip_in_a_token_code_restores_wrong_bytes(archive_bytes, tiny_model):
    """Every single-bit change of the first corrected chunk's token code (the container
    cannot check it): extract refuses it, never restores other bytes."""
    archive = container.unpack(archive_bytes)
    target = next(index for index, chunk in enumerate(archive.chunks) if getattr(chunk, "positions", ()))
    tokens = archive.chunks[target].tokens
    decompressor = codec.LmzDecompressor(loaded=tiny_model)
    outcomes = {"exact": 0, "refused": 0}
    for bit in range(8 * len(tokens)):
        flipped = bytearray(tokens)
        flipped[bit // 8] ^= 1 << bit % 8
        chunks = list(archive.chunks)
        chunks[target] = dataclasses.replace(chunks[target], tokens=bytes(flipped))
        try:
            assert decompressor.decompress(container.pack(archive.header, chunks)) == TEXT
            outcomes["exact"] += 1
        except LmzError:
            outcomes["refused"] += 1
    # Even a flip that decodes to the same tokens is refused: it is not their code.
    assert outcomes == {"exact": 0, "refused": 8 * len(tokens)}
