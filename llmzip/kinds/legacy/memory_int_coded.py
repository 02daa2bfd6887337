"""Kind ``memory-int-coded`` (code 5, format 2.3; read only): a ``memory-int`` vector with
range-coded coefficients and a few corrected positions.

llmzip wrote this kind by default before kind ``memory-int-lm`` (6), which codes the same
coefficients and the corrected tokens under the model in one range code
(:mod:`llmzip.kinds.memory_int_lm`); it now only reads it. Its writer, the training form
that stored it, is in ``fixtures/legacy_writers.py``.

Two changes to kind 4 (:mod:`llmzip.kinds.memory_int`), each measured on the vectors
compress writes for Gemma 3 270M (BENCHMARKS.md, "Coded vectors and corrections"):

* **Coded coefficients.** Trained 4-bit coefficients are far from uniform (about 3.4 bits
  of entropy, most of them near zero), so instead of a fixed-width bit stream they are
  range coded, coefficient 0 first, each with adaptive counts over the ``2 * qmax + 1``
  values that start at 1 and grow by 1 per coded value: 12 % fewer bytes at 4 bits on an RMS grid
  (and with the trainer's sparsity pull about half the coefficients are 0: ~215 B a vector),
  with nothing stored but the code.
* **Corrections.** A chunk whose greedy decode is right except at a few positions stores
  those positions and their tokens; the decoder takes the stored token there
  (:func:`llmzip.decode.decode_batch`'s ``forced``) and goes on greedily. A chunk that a
  vector almost holds then costs a few bytes more instead of falling back to another kind,
  and training can stop once only a few positions fall short of the margin. A corrected
  position does not count towards the margin; every other position does, as in kind 4.

The vector is then rebuilt exactly as kind 4 rebuilds it (``offset + s * (P @ q)`` in
float64, rounded once to float32; the same ``mo`` offset), so the two kinds share
:func:`~llmzip.kinds.memory_int.rebuild` and its guarantees.

Record fields after ``n_tokens`` and ``min_margin``: ``rank varint, bits u8 (2..8), scale
f16, corrections varint, (gap varint, token varint) per correction, code``: position i of
the corrections is the previous one + 1 + gap (the first: gap itself), strictly inside the
chunk; ``code`` is the rest of the fields, the range coder's words (format/CODEC.md,
"Coded integer vectors").
"""

from __future__ import annotations

from dataclasses import dataclass

from llmzip import wire
from llmzip.corrections import Corrections
from llmzip.errors import FormatError
from llmzip.identity import recorded_identity
from llmzip.kinds import memory_int
from llmzip.kinds.memory_int_lm import BITS, read_coefficients, read_head, write_coefficients, write_head
from llmzip.kinds.rangecode import pack_words, unpack_words


@dataclass(frozen=True)
class CodedIntVectorChunk:
    """A chunk regenerated from ``offset + scale * (basis(d, rank) @ q)``, ``q`` range coded
    in ``code``, with ``corrections`` forced during the decode."""

    rank: int  # k: number of coefficients
    bits: int  # each coefficient is within -(2**(bits-1) - 1) .. 2**(bits-1) - 1
    scale: float  # s, an fp16 value
    corrections: tuple[tuple[int, int], ...]  # (position, token id), positions increasing
    code: bytes  # the range-coded coefficients
    n_tokens: int
    length: int
    check: int
    min_margin: float  # smallest gap over the positions not corrected, measured at compress time

    @property
    def payload(self) -> bytes:
        """The record's fields after n_tokens and min_margin (and what a journal keeps)."""
        fields = [write_head(self.rank, self.bits, self.scale), wire.varint(len(self.corrections))]
        previous = -1
        for position, token in self.corrections:
            fields += [wire.varint(position - previous - 1), wire.varint(token)]
            previous = position
        return b"".join(fields) + self.code

    def integers(self):
        """(rank,) int64 numpy array of the coefficients (:func:`decode_coefficients`)."""
        return decode_coefficients(self.code, self.rank, self.bits)


def encode_coefficients(q, bits: int) -> bytes:
    """The range code of integer coefficients ``q`` ((k,) numpy, each within
    ``qmax(bits)``): adaptive counts over the 2 * qmax + 1 values, 1 each at the start,
    +1 per coded value."""
    import constriction

    coder = constriction.stream.queue.RangeEncoder()
    write_coefficients(coder, q, bits)
    return pack_words(coder.get_compressed())


def decode_coefficients(code: bytes, rank: int, bits: int):
    """(rank,) int64 numpy coefficients from their range code. Refuses a code that
    :func:`encode_coefficients` would not have written for them (one code per vector), so
    a damaged code is caught here rather than as a different vector."""
    import constriction

    try:
        q = read_coefficients(constriction.stream.queue.RangeDecoder(unpack_words(code)), rank, bits)
    except Exception as exc:  # noqa: BLE001 - constriction raises on a code it cannot read
        raise FormatError(f"memory-int-coded coefficients cannot be decoded: {exc}") from None
    if encode_coefficients(q, bits) != code:
        raise FormatError("memory-int-coded coefficients: the code is not the one their values encode to")
    return q


def parse_payload(payload, n_tokens: int, vector_dim: int, where: str):
    """(rank, bits, scale, corrections, code) from payload bytes, every bound checked."""
    payload = memoryview(payload)
    rank, bits, scale, at = read_head(payload, vector_dim, "memory-int-coded", where)
    count, at = wire.read_varint(payload, at, f"{where}: corrections")
    wire.check_int(count, f"{where}: corrections", 0, min(wire.MAX_CORRECTIONS, n_tokens - 1))
    corrections, position = [], -1
    for _ in range(count):
        gap, at = wire.read_varint(payload, at, f"{where}: correction position")
        token, at = wire.read_varint(payload, at, f"{where}: correction token")
        position += gap + 1
        wire.check_int(position, f"{where}: corrected position", 0, n_tokens - 1)
        corrections.append((position, token))
    if at >= payload.nbytes:
        raise FormatError(f"{where}: a memory-int-coded record has no coefficient code")
    return rank, bits, scale, tuple(corrections), bytes(payload[at:])


class CodedIntVectorKind(memory_int.IntVectorKind):
    """Wire half: record fields ``n_tokens varint, min_margin f32`` and the payload above.
    Model half: kind 4's rebuild, and the decode forced at the corrected positions."""

    name = "memory-int-coded"
    code = 5
    chunk_type = CodedIntVectorChunk
    minor = 3
    written = False  # superseded by memory-int-lm

    def parse(self, payload, n_tokens: int, vector_dim: int, where: str) -> tuple:
        return parse_payload(payload, n_tokens, vector_dim, where)

    def export_row(self, chunk: CodedIntVectorChunk, archive) -> dict:
        return {**super().export_row(chunk, archive), "corrections": [list(pair) for pair in chunk.corrections]}

    def check_before_model(self, items, archive) -> None:
        super().check_before_model(items, archive)
        vocab = recorded_identity(archive.version, archive.header).vocab_size
        for index, chunk in items:
            for position, token in chunk.corrections:
                if token >= vocab:
                    raise FormatError(f"chunk {index}: corrected token {token} at position {position} is not "
                                      f"below the model's vocabulary size {vocab}")

    def corrections(self, chunk: CodedIntVectorChunk):
        return Corrections(chunk.corrections)

    def corrections_count(self, chunk: CodedIntVectorChunk) -> int:
        return len(chunk.corrections)


KIND = CodedIntVectorKind()
