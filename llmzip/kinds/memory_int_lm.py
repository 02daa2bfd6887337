"""Kind ``memory-int-lm`` (code 6): a ``memory-int-coded`` vector whose corrections are
coded in the same range code as its coefficients, their tokens under the model.

A correction of kind 5 (:mod:`llmzip.kinds.legacy.memory_int_coded`, read only now)
stores its position's gap and its token as varints: 1 B and 1-3 B (2.2 B on average in the
GPL-3 preamble's archive; most of Gemma 3's 262k ids need 3), ~3.2 B a correction, a tenth
of a 64-token chunk's record at 8 corrections. But the decoder has the model's logits at the corrected position, and there the chunk's token is nearly always the
greedy token (its gap too small to count on) or the runner-up: under the model's
distribution it costs 3.4 bits on average (62 corrections of the GPL-3 preamble's vectors;
BENCHMARKS.md, "Corrections coded by the model"). So this kind codes, after the
coefficients and in the same range code:

* one flag per token position, corrected or not, under adaptive counts (about 6 B for 13
  corrections among 55 positions, against 13 B of gap varints and a count);
* each corrected token exactly as kind ``lm`` (scheme 2) codes a token, from the logits the
  decode computes at its position, with the grids and tolerance that make the code survive
  the logits' last-bit drift between machines and batch shapes.

Everything else is kind 5: the coefficients' code (:func:`write_coefficients`, here
because this is the kind that is written), the rebuild, the decode with the
corrected positions forced and left out of the margin. The coefficients and flags can be
read without the model (the vector is rebuilt and the positions checked before it loads);
the tokens only during the decode, each with its position's logits. So the writer codes
them during the decode that verifies the stored form (:class:`CodingTokens`, through
:meth:`llmzip.corrections.Corrections.finish`), and the reader decodes them there
(:class:`DecodedTokens`), re-encoding everything it decoded: a record whose code is not
the exact code of what it decodes to is refused (one code per record, as for kind 5).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from llmzip import wire
from llmzip.corrections import Corrections
from llmzip.errors import FormatError
from llmzip.kinds import bands, memory_int
from llmzip.kinds.rangecode import counts_model, pack_words, unpack_words

NAME = "memory-int-lm"
BITS = wire.CODED_BITS  # coefficient widths this kind codes: up to 255 values per model
FLAG_START = (1, 1)  # counts of (not corrected, corrected) before a record's first flag; +1 per flag


def write_coefficients(coder, q, bits: int) -> None:
    """Code integer coefficients ``q`` ((k,) numpy, each within ``qmax(bits)``) into
    ``coder`` (a constriction queue RangeEncoder): adaptive counts over the 2 * qmax + 1
    values, 1 each at the start, +1 per coded value (format/CODEC.md, "Coded integer
    vectors"; kind memory-int-coded codes them alone the same way)."""
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


def write_head(rank: int, bits: int, scale: float) -> bytes:
    """The fields a coded record starts with (this kind's and memory-int-coded's): rank
    varint, bits u8, scale fp16."""
    return wire.varint(rank) + bytes([bits]) + memory_int.SCALE.pack(scale)


def read_head(payload: memoryview, vector_dim: int, kind_name: str, where: str):
    """(rank, bits, scale, offset after them): the fields a coded record starts with (this
    kind's and memory-int-coded's), every bound checked."""
    rank, bits, at = memory_int.read_rank_and_bits(payload, vector_dim, BITS, kind_name, where)
    if payload.nbytes < at + memory_int.SCALE.size:
        raise FormatError(f"{where}: a {kind_name} record's fields end inside its scale")
    (scale,) = memory_int.SCALE.unpack_from(payload, at)
    memory_int.check_scale(scale, where)
    return rank, bits, scale, at + memory_int.SCALE.size


@dataclass(frozen=True)
class LmCorrectedVectorChunk:
    """A chunk regenerated from ``offset + scale * (basis(d, rank) @ q)``; ``code`` holds
    ``q``, which positions are corrected, and their tokens (under the model)."""

    rank: int  # k: number of coefficients
    bits: int  # each coefficient is within -(2**(bits-1) - 1) .. 2**(bits-1) - 1
    scale: float  # s, an fp16 value
    code: bytes  # one range code: the coefficients, a flag per position, the corrected tokens
    n_tokens: int
    length: int
    check: int
    min_margin: float  # smallest gap over the positions not corrected, measured at compress time

    @property
    def payload(self) -> bytes:
        """The record's fields after n_tokens and min_margin (and what a journal keeps)."""
        return write_head(self.rank, self.bits, self.scale) + self.code

    def integers(self):
        """(rank,) int64 numpy array of the coefficients (the code's start)."""
        return self.read(flags=False)[1]

    @functools.cached_property
    def positions(self) -> tuple[int, ...]:
        """The corrected positions, increasing (the flags after the coefficients)."""
        return self.read()[2]

    def read(self, flags: bool = True, coder=None):
        """(the range decoder, standing after what was read; q; the corrected positions, or
        () without ``flags``) from the start of ``code`` (read with ``coder`` where given);
        a ``FormatError`` for a code that fails there, or more corrected positions than a
        record may hold."""
        import constriction

        try:
            coder = coder if coder is not None else constriction.stream.queue.RangeDecoder(unpack_words(self.code))
            q = read_coefficients(coder, self.rank, self.bits)
            positions = read_flags(coder, self.n_tokens) if flags else ()
        except Exception as exc:  # noqa: BLE001 - constriction raises on a code it cannot read
            raise FormatError(f"{NAME} code cannot be decoded: {exc}") from None
        most = min(wire.MAX_CORRECTIONS, self.n_tokens - 1)
        if len(positions) > most:
            raise FormatError(f"{NAME} record corrects {len(positions)} of its {self.n_tokens} positions "
                              f"(at most {most})")
        return coder, q, positions


def write_flags(coder, positions, n_tokens: int) -> None:
    """One flag per position 0 .. n_tokens - 1 into ``coder``: 1 where corrected."""
    counts, corrected = list(FLAG_START), set(positions)
    for position in range(n_tokens):
        flag = int(position in corrected)
        coder.encode(flag, counts_model(counts))
        counts[flag] += 1


def read_flags(coder, n_tokens: int) -> tuple[int, ...]:
    """The corrected positions from ``n_tokens`` flags of ``coder`` (:func:`write_flags`)."""
    counts, positions = list(FLAG_START), []
    for position in range(n_tokens):
        flag = int(coder.decode(counts_model(counts)))
        counts[flag] += 1
        if flag:
            positions.append(position)
    return tuple(positions)


def parse_payload(payload, vector_dim: int, where: str):
    """(rank, bits, scale, code) from payload bytes, every bound the container can check checked."""
    payload = memoryview(payload)
    rank, bits, scale, at = read_head(payload, vector_dim, NAME, where)
    if at >= payload.nbytes:
        raise FormatError(f"{where}: a {NAME} record has no code")
    return rank, bits, scale, bytes(payload[at:])


class LmCorrectedVectorKind(memory_int.IntVectorKind):
    """Wire half: record fields ``n_tokens varint, min_margin f32`` and the payload above.
    Model half: kind 4's rebuild, and the decode with the corrected tokens decoded from
    the code at their positions."""

    name = NAME
    code = 6
    chunk_type = LmCorrectedVectorChunk
    minor = 4
    written = True  # compress's vectors up to 8 bits: the default

    def parse(self, payload, n_tokens: int, vector_dim: int, where: str) -> tuple:
        return parse_payload(payload, vector_dim, where)

    def export_row(self, chunk: LmCorrectedVectorChunk, archive) -> dict:
        return {**super().export_row(chunk, archive), "corrected_positions": list(chunk.positions)}

    def check_before_model(self, items, archive) -> None:
        super().check_before_model(items, archive)
        for index, chunk in items:
            try:
                chunk.positions  # reads the coefficients and flags (kept for export and -v)
            except FormatError as exc:
                raise FormatError(f"chunk {index}: {exc}") from None

    def corrections(self, chunk: LmCorrectedVectorChunk):
        return DecodedTokens(chunk)

    def corrections_count(self, chunk: LmCorrectedVectorChunk) -> int:
        return len(chunk.positions)


KIND = LmCorrectedVectorKind()


class CodingTokens(Corrections):
    """The writer's corrections: a range code that starts with the coefficients and the
    flags, then codes each corrected token, the chunk's own, from the logits at its
    position; :meth:`finish` makes it the record's code."""

    def __init__(self, chunk: LmCorrectedVectorChunk, pairs):
        import constriction

        super().__init__(pairs)
        self.head = write_head(chunk.rank, chunk.bits, chunk.scale)
        coder = constriction.stream.queue.RangeEncoder()
        write_coefficients(coder, chunk.integers(), chunk.bits)
        write_flags(coder, self.positions, chunk.n_tokens)
        self.encoder = bands.BandEncoder(None, coder)

    def take(self, position: int, logits) -> int:
        return self.encoder.encode(self.tokens[position], logits)

    def finish(self, payload: bytes) -> bytes:
        return self.head + pack_words(self.encoder.coder.get_compressed())


class DecodedTokens(Corrections):
    """The reader's corrections: decodes each corrected token from the record's code with
    the logits at its position. Every symbol it decodes, coefficients and flags included,
    is coded again with the very model it was decoded with (:class:`_Recoding`); once all
    are decoded the row is marked ``failed`` unless that gives the stored code exactly (or
    when the code could not be decoded). Coding again the *decoded* choices, not encoding
    the tokens afresh, keeps the check independent of the logits' last bits: an encoder
    run on this machine's logits may choose another grid than the writer's did."""

    def __init__(self, chunk: LmCorrectedVectorChunk):
        import constriction

        super().__init__()
        self.recoding = _Recoding(constriction.stream.queue.RangeDecoder(unpack_words(chunk.code)))
        _, _, positions = chunk.read(coder=self.recoding)
        self.positions, self.last, self.code = frozenset(positions), max(positions, default=None), chunk.code
        self.decoder = bands.BandDecoder(b"", self.recoding)
        if self.last is None:
            self._check()

    def take(self, position: int, logits) -> int:
        token = self.decoder(position, logits)
        if position == self.last:
            self._check()
        return token

    def _check(self) -> None:
        self.failed = self.decoder.failed or self.recoding.code() != self.code


class _Recoding:
    """A range decoder that codes every symbol it decodes again, with the same model, into
    a range encoder: what the stored code would be if it were the canonical code of what
    was read from it."""

    def __init__(self, decoder):
        import constriction

        self.decoder, self.encoder = decoder, constriction.stream.queue.RangeEncoder()

    def decode(self, model):
        symbol = self.decoder.decode(model)
        self.encoder.encode(int(symbol), model)
        return symbol

    def code(self) -> bytes:
        return pack_words(self.encoder.get_compressed())
