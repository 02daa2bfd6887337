"""Kind ``memory-int-lm`` (code 6): a ``memory-int-coded`` vector whose corrected tokens
are range coded under the model instead of stored as token ids.

A correction of kind 5 (:mod:`llmzip.kinds.memory_int_coded`) stores its token as a varint:
2-3 bytes for most of Gemma 3's 262k ids, about a tenth of a 64-token chunk's record in
corrections alone. But the decoder has the model's logits at the corrected position, and
there the chunk's token is nearly always the greedy token (its gap too small to count on)
or the runner-up: under the model's distribution it costs 3.4 bits on average (62
corrections of the GPL-3 preamble's vectors; BENCHMARKS.md, "Corrections coded by the
model"). So this kind codes each corrected token exactly as kind ``lm`` (scheme 2) codes a
token, from the logits the decode computes there, with the grids and tolerance that make
the code survive the logits' last-bit drift between machines and batch shapes.

Everything else is kind 5: the coefficients' code, the rebuild, the decode with the
corrected positions forced and left out of the margin. The record holds the positions
(varint gaps) and two codes: the coefficients' (its size first) and then the tokens'.

The tokens can only be decoded *during* the decode (each needs its position's logits), so
the writer codes them during the decode that verifies the stored form
(:class:`CodingTokens`, through :meth:`llmzip.decode.Corrections.finish`), and the reader
decodes them there (:class:`DecodedTokens`), re-encoding what it decoded: a record whose
token code is not the exact code of the tokens it gives is refused (one code per record,
as for the coefficients).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmzip import container
from llmzip.errors import FormatError
from llmzip.kinds import lm, memory_int
from llmzip.kinds.memory import Corrections
from llmzip.kinds.memory_int_coded import (CodedIntVectorForm, decode_coefficients, encode_coefficients, gap_bytes,
                                           read_head, read_position, write_head)

NAME = "memory-int-lm"


@dataclass(frozen=True)
class LmCorrectedVectorChunk:
    """A chunk regenerated from ``offset + scale * (basis(d, rank) @ q)``, ``q`` range coded
    in ``code``, with the tokens at ``positions`` decoded from ``tokens`` during the decode."""

    rank: int  # k: number of coefficients
    bits: int  # each coefficient is within -(2**(bits-1) - 1) .. 2**(bits-1) - 1
    scale: float  # s, an fp16 value
    positions: tuple[int, ...]  # corrected positions, increasing
    code: bytes  # the range-coded coefficients (kind memory-int-coded's code)
    tokens: bytes  # the corrected tokens, range coded under the model; empty without corrections
    n_tokens: int
    length: int
    check: int
    min_margin: float  # smallest gap over the positions not corrected, measured at compress time

    @property
    def payload(self) -> bytes:
        """The record's fields after n_tokens and min_margin (and what a journal keeps)."""
        head = write_head(self.rank, self.bits, self.scale, len(self.positions))
        return head + b"".join(gap_bytes(self.positions)) + container.varint(len(self.code)) + self.code + self.tokens

    def integers(self):
        """(rank,) int64 numpy array of the coefficients."""
        return decode_coefficients(self.code, self.rank, self.bits)


def parse_payload(payload, n_tokens: int, vector_dim: int, where: str):
    """(rank, bits, scale, positions, code, tokens) from payload bytes, every bound checked."""
    payload = memoryview(payload)
    rank, bits, scale, count, at = read_head(payload, n_tokens, vector_dim, NAME, where)
    positions, position = [], -1
    for _ in range(count):
        position, at = read_position(payload, at, position, n_tokens, where)
        positions.append(position)
    size, at = container.read_varint(payload, at, f"{where}: coefficient code size")
    if size == 0 or at + size > payload.nbytes:
        raise FormatError(f"{where}: a {NAME} record's coefficient code of {size} B does not fit its fields")
    tokens = bytes(payload[at + size :])
    if bool(tokens) != bool(count):
        raise FormatError(f"{where}: a {NAME} record with {count} corrections has {len(tokens)} B of token code")
    return rank, bits, scale, tuple(positions), bytes(payload[at : at + size]), tokens


class LmCorrectedVectorKind(memory_int.IntVectorKind):
    """Wire half: record fields ``n_tokens varint, min_margin f32`` and the payload above.
    Model half: kind 4's rebuild, and the decode with the corrected tokens decoded from
    their code at their positions."""

    name = NAME
    code = 6
    chunk_type = LmCorrectedVectorChunk
    minor = 4

    def parse(self, payload, n_tokens: int, vector_dim: int, where: str) -> tuple:
        return parse_payload(payload, n_tokens, vector_dim, where)

    def export_row(self, chunk: LmCorrectedVectorChunk, archive) -> dict:
        return {**super().export_row(chunk, archive), "corrected_positions": list(chunk.positions)}

    def corrections(self, chunk: LmCorrectedVectorChunk):
        return DecodedTokens(chunk)


KIND = LmCorrectedVectorKind()


class CodingTokens(Corrections):
    """The writer's corrections: takes the chunk's own tokens and codes each from the
    logits at its position; :meth:`finish` appends that code to the record's payload."""

    def __init__(self, pairs):
        super().__init__(pairs)
        self.encoder = lm.BandEncoder((), None)

    def take(self, position: int, logits) -> int:
        return self.encoder.encode(self.tokens[position], logits)

    def finish(self, payload: bytes) -> bytes:
        return payload + self.encoder.coded() if self.positions else payload


class DecodedTokens(Corrections):
    """The reader's corrections: decodes each token from the record's token code with the
    logits at its position. After the last one it re-encodes all of them and marks the
    row ``failed`` unless that gives the stored code exactly (or the code could not be
    decoded)."""

    def __init__(self, chunk: LmCorrectedVectorChunk):
        super().__init__()
        self.positions = frozenset(chunk.positions)
        self.last = max(chunk.positions, default=None)
        self.code = chunk.tokens
        self.decoder = lm.BandDecoder(chunk.tokens)
        self.again = lm.BandEncoder((), None)

    def take(self, position: int, logits) -> int:
        token = self.decoder(position, logits)
        self.again.encode(token, logits)
        if position == self.last:
            self.failed = self.decoder.failed or self.again.coded() != self.code
        return token


class LmCorrectedVectorForm(CodedIntVectorForm):
    """:class:`~llmzip.kinds.memory_int_coded.CodedIntVectorForm` stored as kind
    memory-int-lm: the same training, grid and sparsity pull; the verifying decode codes
    the corrected tokens (:class:`CodingTokens`)."""

    kind = KIND

    def corrector(self, corrections):
        return CodingTokens(corrections)

    def _record(self, scale: float, q, corrections=()) -> LmCorrectedVectorChunk:
        """The stored form before the decode: no token code yet (:class:`CodingTokens`
        appends it)."""
        return LmCorrectedVectorChunk(self.rank, self.bits, scale, tuple(p for p, _ in corrections),
                                      encode_coefficients(q, self.bits), b"", n_tokens=1, length=1, check=0,
                                      min_margin=0.0)
