"""Kind ``memory-int`` (code 4): a memory vector stored as k small integers.

k = d quantises every coordinate of the vector (2-16 bits each instead of fp16's 16);
k < d stores k coefficients of a fixed random basis (a low-rank vector).

A full memory vector is d fp16 numbers (10,240 bits for Gemma 3 270M) and holds a chunk
worth a few hundred bits, so an archive of them is many times its input. This kind stores
the vector the model is prompted with as

    v = offset + s * (P @ q)        # (d,) float32

* ``P`` (d, k): for k < d a fixed matrix of +1/-1 read from xxh64 hashes (:func:`basis`;
  the first k columns of the d x K matrix for any d > K > k, so those ranks share one
  basis); for k = d the identity, so the coefficients are the vector's own coordinates
  (quantised): Adam's per-coordinate steps then act on the model's own axes, which took
  fewer steps than a full-rank random basis (BENCHMARKS.md, "Bytes per vector");
* ``q`` (k,): the stored integer coefficients, ``bits`` 2 to 16 bits each, in
  ``-(2**(bits-1) - 1) .. 2**(bits-1) - 1``;
* ``s``: one stored fp16 scale per vector (finite, > 0);
* ``offset`` (d,): the model's fitted start vector that llmzip ships (``llmzip/starts/``),
  or zero for a model without one; the archive header records which
  (settings ``mo``: xxh64 of its float32 bytes, absent for zero).

Every step of that formula is exact or correctly rounded once in IEEE float64: ``P @ q``
sums integers below 2**53, ``s`` is an fp16 value, then one multiply, one add and one
rounding to float32. So the vector extract rebuilds is the same bits on any machine, and
compress verifies exactly that vector with the decoder extract runs (format/CODEC.md).

Training (:class:`llmzip.forms.IntVectorForm`) optimises a float ``z`` (k,) and prompts the model with
the *quantised* vector at every step (a straight-through estimator: the gradient for the
rounded coefficients is applied to ``z``), so the margin it stops on is measured on the
stored form.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass

import xxhash

from llmzip import wire
from llmzip.errors import FormatError
from llmzip.identity import recorded_identity
from llmzip.kinds.memory import MemoryKind, _float32_at_most, _MARGIN_V2

BITS = wire.VECTOR_BITS  # coefficient widths a record may use
BASIS_SEED = 0x6C6D7A62  # xxh64 seed of the basis hashes ("lmzb")
OFFSET_KEY = wire.SETTINGS_KEYS["memory_offset"]  # xxh64 of the offset's float32 bytes (absent: zero)
SCALE = struct.Struct("<e")  # a record's scale: one little-endian fp16
MIN_SCALE = 2.0**-14  # the smallest normal fp16: what a writer clamps a vector's scale to
# Where a writer puts the outermost grid level, in RMS of the coefficients (a compress-time
# choice; the record stores the scale). Scaling to the largest |z| leaves most coordinates
# on a few levels near zero at 2 and 4 bits: on 4 rows of the paper's 100-character chunks
# 2-bit max-scaled vectors held 0/4 in 400 steps, 1.2 x RMS 2/4; 4-bit needed 129 mean
# steps max-scaled, 113 at 2.0 x RMS, 100 at 2.5 x RMS (fp16 vectors: 70).
CLIP = {2: 1.2, 3: 1.9, 4: 2.5}  # 3 bits: between the measured two, not measured itself


def fp16_scale(value: float) -> float:
    """``value`` rounded to the fp16 a record stores its scale in, at least :data:`MIN_SCALE`."""
    (rounded,) = SCALE.unpack(SCALE.pack(max(value, MIN_SCALE)))
    return rounded


def qmax(bits: int) -> int:
    """Largest coefficient magnitude at ``bits`` bits (symmetric: -2**(bits-1) is unused)."""
    return 2 ** (bits - 1) - 1


def coefficient_bytes(rank: int, bits: int) -> int:
    return (rank * bits + 7) // 8


@dataclass(frozen=True)
class IntVectorChunk:
    """A chunk regenerated from ``offset + scale * (basis(d, rank) @ coefficients)``."""

    rank: int  # k: number of coefficients
    bits: int  # bits per coefficient: 2..16
    scale: float  # s, an fp16 value
    coefficients: bytes  # q: a little-endian bit stream of bits-bit two's complement fields (padding 0)
    n_tokens: int  # tokens the decoder must generate
    length: int  # bytes of the chunk's text
    check: int  # wire.chunk_check() of the chunk's bytes
    min_margin: float  # smallest top-1/top-2 logit gap measured by extract's computation at compress time

    @property
    def payload(self) -> bytes:
        """The record's fields after n_tokens and min_margin (and what a journal keeps)."""
        return wire.varint(self.rank) + bytes([self.bits]) + SCALE.pack(self.scale) + self.coefficients

    def integers(self):
        """(rank,) int64 numpy array of the coefficients (:func:`unpack_coefficients`)."""
        return unpack_coefficients(self.coefficients, self.rank, self.bits)


def parse_payload(payload, vector_dim: int, where: str) -> tuple[int, int, float, bytes]:
    """(rank, bits, scale, coefficients) from payload bytes, every bound checked."""
    payload = memoryview(payload)
    rank, bits, at = read_rank_and_bits(payload, vector_dim, BITS, "memory-int", where)
    expected = at + SCALE.size + coefficient_bytes(rank, bits)
    if payload.nbytes != expected:
        raise FormatError(f"{where}: a rank-{rank} {bits}-bit vector takes {expected} bytes of fields "
                          f"after n_tokens and min_margin, not {payload.nbytes}")
    (scale,) = SCALE.unpack_from(payload, at)
    check_scale(scale, where)
    coefficients = bytes(payload[at + SCALE.size :])
    q = unpack_coefficients(coefficients, rank, bits)
    if abs(int(q.min())) > qmax(bits) or int(q.max()) > qmax(bits):
        raise FormatError(f"{where}: a {bits}-bit coefficient is outside -{qmax(bits)}..{qmax(bits)}")
    if rank * bits % 8 and coefficients[-1] >> (rank * bits % 8):
        raise FormatError(f"{where}: the padding bits after the last {bits}-bit coefficient are not zero")
    return rank, bits, scale, coefficients


def read_rank_and_bits(payload: memoryview, vector_dim: int, widths, kind_name: str, where: str):
    """(rank, bits, offset after them) from the start of a record's payload, bounded:
    rank 1..``vector_dim``, bits one of ``widths``."""
    rank, at = wire.read_varint(payload, 0, f"{where}: rank")
    wire.check_int(rank, f"{where}: rank", 1, vector_dim)
    if at >= payload.nbytes:
        raise FormatError(f"{where}: a {kind_name} record's fields end before its bits per coefficient")
    if payload[at] not in widths:
        raise FormatError(f"{where}: bits per coefficient {payload[at]} is not in {widths[0]}..{widths[-1]}")
    return rank, payload[at], at + 1


def check_scale(scale: float, where: str) -> None:
    if not math.isfinite(scale) or scale <= 0:
        raise FormatError(f"{where}: scale {scale!r} is not a finite number > 0")


def unpack_coefficients(coefficients: bytes, rank: int, bits: int):
    """(rank,) int64 numpy array of the stored coefficients: a little-endian bit stream,
    coefficient i in bits i*bits .. i*bits + bits - 1 (least significant first), two's
    complement. At 8 and 16 bits that is plain int8 / little-endian int16."""
    import numpy

    stream = numpy.unpackbits(numpy.frombuffer(coefficients, dtype="u1"), bitorder="little")
    fields = stream[: rank * bits].reshape(rank, bits).astype(numpy.int64) @ (1 << numpy.arange(bits))  # (rank,)
    return numpy.where(fields >= 2 ** (bits - 1), fields - 2**bits, fields)  # two's complement


def pack_coefficients(q, bits: int) -> bytes:
    """Bytes of integer coefficients ``q`` (numpy, each within ``qmax(bits)``), the layout
    :func:`unpack_coefficients` reads; the bits after the last coefficient are 0."""
    import numpy

    fields = numpy.asarray(q, dtype=numpy.int64) & (2**bits - 1)  # (rank,)
    stream = ((fields[:, None] >> numpy.arange(bits)) & 1).astype(numpy.uint8).reshape(-1)
    return numpy.packbits(stream, bitorder="little").tobytes()


@functools.lru_cache(maxsize=16)
def basis(vector_dim: int, rank: int):
    """P, (vector_dim, rank) float64, read-only: the identity for rank = vector_dim; else
    +1/-1, column j, rows 64b..64b+63 being the bits of ``xxh64(u32le(j) + u32le(b),
    seed=BASIS_SEED)``, least significant first: a 0 bit is +1, a 1 bit is -1
    (format/CODEC.md, "Integer vectors")."""
    import numpy

    if rank == vector_dim:
        matrix = numpy.eye(vector_dim)
        matrix.setflags(write=False)
        return matrix

    blocks = (vector_dim + 63) // 64
    digests = numpy.array([[xxhash.xxh64_intdigest(struct.pack("<II", j, b), BASIS_SEED) for b in range(blocks)]
                           for j in range(rank)], dtype="<u8")  # (rank, blocks)
    bits = numpy.unpackbits(digests.view(numpy.uint8), bitorder="little").reshape(rank, blocks * 64)[:, :vector_dim]
    matrix = (1.0 - 2.0 * bits.astype(numpy.float64)).T.copy()  # (d, rank)
    matrix.setflags(write=False)
    return matrix


@functools.lru_cache(maxsize=4)
def offset_for(weights_fingerprint: str):
    """The offset of memory-int vectors for the model with this (algorithm 2) weights
    fingerprint: the fitted start llmzip ships for it ((d,) float32 numpy, read-only, read
    once per process), or None (zero). Shipped start files never change: an archive
    records the checksum of the one it used."""
    from importlib import resources

    from safetensors.numpy import load

    resource = resources.files("llmzip") / "starts" / f"{weights_fingerprint}.safetensors"
    if not resource.is_file():
        return None
    offset = load(resource.read_bytes())["start"].astype("<f4")
    offset.setflags(write=False)
    return offset


def offset_checksum(offset) -> int | None:
    """The settings value that names ``offset`` ((d,) float32 numpy, or None for zero)."""
    return None if offset is None else wire.checksum(offset.astype("<f4").tobytes())


def archive_offset(archive):
    """The offset of ``archive``'s memory-int vectors ((d,) float32 numpy, or None for zero):
    the one this llmzip ships for the archive's model, or a ``FormatError`` if the header's
    settings ``mo`` names another (extract and export both refuse rather than rebuild
    different vectors)."""
    recorded = archive.header.settings.get(OFFSET_KEY)
    offset = offset_for(recorded_identity(archive.version, archive.header).weights_fingerprint)
    if recorded != offset_checksum(offset):
        raise FormatError(f"memory-int vectors were written with offset {recorded!r}; this llmzip has "
                          f"{offset_checksum(offset)!r} for the archive's model")
    return offset


def rebuild(chunks, vector_dim: int, offset):
    """The vectors extract prompts with: (B, vector_dim) float32 numpy, B = len(chunks)
    (of this kind or of kinds memory-int-coded, memory-int-lm: anything with rank, scale and ``integers()``),
    ``offset`` a (d,) float32 numpy array or None (see the module docstring for why these are
    the same bits everywhere)."""
    import numpy

    vectors = numpy.zeros((len(chunks), vector_dim), dtype=numpy.float64)
    base = numpy.zeros(vector_dim) if offset is None else offset.astype(numpy.float64)
    for row, chunk in enumerate(chunks):
        q = chunk.integers().astype(numpy.float64)  # (k,)
        exact = basis(vector_dim, chunk.rank) @ q  # (d,): integer sums, exact in float64
        vectors[row] = base + chunk.scale * exact
    return vectors.astype(numpy.float32)


class IntVectorKind(MemoryKind):
    """Wire half: record fields ``n_tokens varint, min_margin f32, rank varint, bits u8,
    scale f16, coefficients``. Model half: :class:`MemoryKind`'s decode and restore with
    the rebuilt float32 vectors."""

    name = "memory-int"
    code = 4
    chunk_type = IntVectorChunk
    minor = 2
    written = True  # compress at widths the coded kinds do not take (9..16 bits)

    def parse(self, payload, n_tokens: int, vector_dim: int, where: str) -> tuple:
        """The chunk's fields its payload holds (those of :attr:`chunk_type` before
        ``n_tokens``), every bound checked."""
        return parse_payload(payload, vector_dim, where)

    def encode_fields(self, chunk, ctx) -> bytes:
        where = f"{self.name} chunk"
        self._check_common(chunk, where)
        payload = chunk.payload
        self.parse(payload, chunk.n_tokens, ctx.vector_dim, where)
        return wire.varint(chunk.n_tokens) + _MARGIN_V2.pack(_float32_at_most(chunk.min_margin)) + payload

    def decode_fields(self, fields, length, check, ctx, where):
        if tuple(ctx.version) < (2, self.minor):
            raise FormatError(f"{where}: kind {self.name} ({self.code}) is not defined in format "
                              f"{ctx.version[0]}.{ctx.version[1]}")
        n_tokens, at = wire.read_varint(fields, 0, f"{where}: n_tokens")
        wire.check_int(n_tokens, f"{where}: n_tokens", 1, wire.MAX_TOKENS_PER_CHUNK)
        if fields.nbytes < at + _MARGIN_V2.size:
            raise FormatError(f"{where}: a {self.name} record's fields end before its min_margin")
        (margin,) = _MARGIN_V2.unpack_from(fields, at)
        parsed = self.parse(fields[at + _MARGIN_V2.size :], n_tokens, ctx.vector_dim, where)
        chunk = self.chunk_type(*parsed, n_tokens, length, check, margin)
        self._check_common(chunk, where)
        return chunk

    def stored_bytes(self, chunk: IntVectorChunk) -> int:
        return len(chunk.payload)

    def export_row(self, chunk: IntVectorChunk, archive) -> dict:
        """The full (d,) float32 vector the model is prompted with, exactly (not rounded to
        fp16: that would not be the vector compress verified), and the stored form."""
        vector = rebuild([chunk], archive.header.vector_dim, archive_offset(archive))[0]
        return {"n_tokens": chunk.n_tokens, "min_margin": chunk.min_margin, "rank": chunk.rank, "bits": chunk.bits,
                "vector": vector}

    def make_chunk(self, payload: bytes, n_tokens: int, length: int, check: int, min_margin: float, vector_dim: int):
        return self.chunk_type(*self.parse(payload, n_tokens, vector_dim, "trained chunk"), n_tokens, length, check,
                               min_margin)

    # ---------------------------------------------------------------- model half

    def check_before_model(self, items, archive) -> None:
        super().check_before_model(items, archive)
        archive_offset(archive)

    def vectors(self, loaded, chunks):
        import torch

        offset = offset_for(loaded.identity.weights_fingerprint)
        return torch.from_numpy(rebuild(chunks, loaded.model.config.hidden_size, offset))  # (B, d) float32


KIND = IntVectorKind()
