"""Kind ``memory-int-coded`` (code 5): a ``memory-int`` vector with range-coded
coefficients and a few corrected positions.

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

from llmzip import container
from llmzip.config import CODED_BITS, MAX_CORRECTIONS
from llmzip.errors import FormatError
from llmzip.kinds import memory_int
from llmzip.kinds.memory import Corrections
from llmzip.kinds.rangecode import counts_model, pack_words, unpack_words

BITS = CODED_BITS  # coefficient widths this kind codes: up to 255 values per model


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
        fields = [write_head(self.rank, self.bits, self.scale), container.varint(len(self.corrections))]
        previous = -1
        for position, token in self.corrections:
            fields += [container.varint(position - previous - 1), container.varint(token)]
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


def write_coefficients(coder, q, bits: int) -> None:
    """Code ``q`` into ``coder`` (a constriction queue RangeEncoder), as :func:`encode_coefficients`."""
    import numpy

    top = memory_int.qmax(bits)
    counts = numpy.ones(2 * top + 1, dtype=numpy.int64)
    for value in numpy.asarray(q, dtype=numpy.int64).tolist():
        coder.encode(value + top, counts_model(counts))
        counts[value + top] += 1


def read_coefficients(coder, rank: int, bits: int):
    """(rank,) int64 numpy coefficients decoded from ``coder`` (a constriction queue
    RangeDecoder), which then stands after them; constriction raises on a code it cannot read."""
    import numpy

    top = memory_int.qmax(bits)
    counts = numpy.ones(2 * top + 1, dtype=numpy.int64)
    q = numpy.empty(rank, dtype=numpy.int64)
    for i in range(rank):
        q[i] = int(coder.decode(counts_model(counts))) - top
        counts[q[i] + top] += 1
    return q


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
    count, at = container.read_varint(payload, at, f"{where}: corrections")
    container.check_int(count, f"{where}: corrections", 0, min(MAX_CORRECTIONS, n_tokens - 1))
    corrections, position = [], -1
    for _ in range(count):
        gap, at = container.read_varint(payload, at, f"{where}: correction position")
        token, at = container.read_varint(payload, at, f"{where}: correction token")
        position += gap + 1
        container.check_int(position, f"{where}: corrected position", 0, n_tokens - 1)
        corrections.append((position, token))
    if at >= payload.nbytes:
        raise FormatError(f"{where}: a memory-int-coded record has no coefficient code")
    return rank, bits, scale, tuple(corrections), bytes(payload[at:])


def write_head(rank: int, bits: int, scale: float) -> bytes:
    """The fields a coded record starts with (this kind's and memory-int-lm's): rank
    varint, bits u8, scale fp16."""
    return container.varint(rank) + bytes([bits]) + memory_int.SCALE.pack(scale)


def read_head(payload: memoryview, vector_dim: int, kind_name: str, where: str):
    """(rank, bits, scale, offset after them): the fields a coded record starts with (this
    kind's and memory-int-lm's), every bound checked."""
    rank, bits, at = memory_int.read_rank_and_bits(payload, vector_dim, BITS, kind_name, where)
    if payload.nbytes < at + memory_int.SCALE.size:
        raise FormatError(f"{where}: a {kind_name} record's fields end inside its scale")
    (scale,) = memory_int.SCALE.unpack_from(payload, at)
    memory_int.check_scale(scale, where)
    return rank, bits, scale, at + memory_int.SCALE.size


class CodedIntVectorKind(memory_int.IntVectorKind):
    """Wire half: record fields ``n_tokens varint, min_margin f32`` and the payload above.
    Model half: kind 4's rebuild, and the decode forced at the corrected positions."""

    name = "memory-int-coded"
    code = 5
    chunk_type = CodedIntVectorChunk
    minor = 3

    def parse(self, payload, n_tokens: int, vector_dim: int, where: str) -> tuple:
        return parse_payload(payload, n_tokens, vector_dim, where)

    def export_row(self, chunk: CodedIntVectorChunk, archive) -> dict:
        return {**super().export_row(chunk, archive), "corrections": [list(pair) for pair in chunk.corrections]}

    def check_before_model(self, items, archive) -> None:
        from llmzip.identity import recorded_identity

        super().check_before_model(items, archive)
        vocab = recorded_identity(archive.version, archive.header).vocab_size
        for index, chunk in items:
            for position, token in chunk.corrections:
                if token >= vocab:
                    raise FormatError(f"chunk {index}: corrected token {token} at position {position} is not "
                                      f"below the model's vocabulary size {vocab}")

    def corrections(self, chunk: CodedIntVectorChunk):
        return Corrections(chunk.corrections)


KIND = CodedIntVectorKind()


class CodedIntVectorForm(memory_int.IntVectorForm):
    """:class:`~llmzip.kinds.memory_int.IntVectorForm` stored as kind memory-int-coded: a
    range-coded record, corrections the trainer may ask for, and optionally a grid made for
    the code.

    With ``grid`` > 0 every vector's scale is that one fixed step (fp16) instead of a
    multiple of its own RMS, and ``sparsity`` adds ``sparsity * mean(|z|) / grid`` to each
    chunk's loss: a pull towards the offset that the text's own gradient must outweigh, so
    coordinates the chunk does not need end at coefficient 0, the symbol the adaptive code
    makes cheapest. On the GPL-3 preamble's chunks at 4 bits, grid 6.0 and sparsity 1.0 left
    ~300 of 640 coefficients at 0 and coded them in ~212 B instead of ~281 B
    (BENCHMARKS.md, "Coded vectors")."""

    kind = KIND
    corrects = True

    def __init__(self, rank: int, bits: int, offset, vector_dim: int, grid: float = 0.0, sparsity: float = 0.0):
        if bits not in BITS:
            raise ValueError(f"a coded vector's bits must be in {BITS[0]}..{BITS[-1]}, got {bits}")
        if not (grid >= 0 and sparsity >= 0) or sparsity and not grid:
            raise ValueError(f"grid and sparsity must be >= 0, sparsity only with a grid; got {grid}, {sparsity}")
        super().__init__(rank, bits, offset, vector_dim)
        self.grid = memory_int.fp16_scale(grid) if grid else 0.0
        self.sparsity = sparsity

    def _scale(self, z):
        return z.new_full((len(z), 1), self.grid) if self.grid else super()._scale(z)  # (B, 1)

    def penalty(self, z):
        """(B,) added to the chunks' losses (see the class docstring), or 0."""
        return self.sparsity * z.abs().mean(-1) / self.grid if self.sparsity else 0.0

    def corrector(self, payload: bytes, corrections, n_tokens: int):
        """What the decode that verifies the stored form (``payload``, a chunk of
        ``n_tokens``) takes at ``corrections``' positions: their tokens, stored as they are;
        its :meth:`~llmzip.kinds.memory.Corrections.finish` gives the payload to store."""
        return Corrections(corrections)

    def _record(self, scale: float, q, corrections=()) -> CodedIntVectorChunk:
        return CodedIntVectorChunk(self.rank, self.bits, scale, tuple(corrections), encode_coefficients(q, self.bits),
                                   n_tokens=1, length=1, check=0, min_margin=0.0)
