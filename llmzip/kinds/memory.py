"""Kind ``memory`` (code 1): a chunk the frozen model regenerates from one memory vector.

The record holds the vector, the number of tokens to generate and the smallest top-1/top-2
logit gap measured when compress ran the extract computation on it. format/CODEC.md says
exactly how a vector is decoded; this module is the one implementation of that.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from llmzip import wire
from llmzip.corrections import Corrections
from llmzip.errors import FormatError
from llmzip.kinds.base import Kind, Restored, WireContext, check_token_counts, decode_group, map_calls, restored_text
from llmzip.kinds.legacy import format1

_MARGIN_V2 = struct.Struct("<f")  # format 2: n_tokens varint, min_margin f32; the vector follows


@dataclass(frozen=True)
class VectorFormat:
    """How a d-dimensional vector is stored. fp16 little-endian is the only one so far;
    denser forms (int8, low rank) will be further instances, each with its own kind code."""

    name: str
    bytes_per_value: int
    numpy_dtype: str

    def size(self, vector_dim: int) -> int:
        return self.bytes_per_value * vector_dim

    def check(self, raw: bytes, vector_dim: int, where: str) -> None:
        if not isinstance(raw, bytes) or len(raw) != self.size(vector_dim):
            raise FormatError(f"{where}: vector is not {self.size(vector_dim)} bytes ({vector_dim} {self.name} values)")
        if 1 in raw[1::2].translate(_FP16_NONFINITE):
            raise FormatError(f"{where}: vector holds an infinite or NaN {self.name} value")

    def to_numpy(self, raw: bytes):
        """(d,) array of the stored values, in the stored dtype (no rounding)."""
        import numpy

        return numpy.frombuffer(raw, dtype=self.numpy_dtype)


# Maps a byte to 1 when, as the high byte of a little-endian fp16, its exponent bits are all
# ones (infinity or NaN). Translating a vector's high bytes through it finds them in C.
_FP16_NONFINITE = bytes(int(b & 0x7C == 0x7C) for b in range(256))
FP16 = VectorFormat("fp16", 2, "<f2")


@dataclass(frozen=True)
class MemoryChunk:
    """A chunk the frozen model regenerates from one memory vector by greedy decoding."""

    vector: bytes  # FP16.size(vector_dim) bytes
    n_tokens: int  # tokens the decoder must generate
    length: int  # bytes of the chunk's text
    check: int  # wire.chunk_check() of the chunk's bytes
    min_margin: float  # smallest top-1/top-2 logit gap seen at compress-time verification


class MemoryKind(Kind):
    name = "memory"
    code = 1
    chunk_type = MemoryChunk
    needs_model = True
    written = True  # compress --rank 0
    vector_format = FP16

    # ---------------------------------------------------------------- wire half

    def encode_fields(self, chunk: MemoryChunk, ctx: WireContext) -> bytes:
        self._check(chunk, ctx.vector_dim, "memory chunk")
        margin = _float32_at_most(chunk.min_margin)
        return wire.varint(chunk.n_tokens) + _MARGIN_V2.pack(margin) + chunk.vector

    def decode_fields(self, fields, length, check, ctx, where) -> MemoryChunk:
        vector_size = self.vector_format.size(ctx.vector_dim)
        if ctx.version[0] == 1:
            n_tokens, margin, head = format1.read_memory_fields(fields, vector_size, where)
        else:
            n_tokens, head = wire.read_varint(fields, 0, f"{where}: n_tokens")
            if fields.nbytes != head + _MARGIN_V2.size + vector_size:
                raise FormatError(f"{where}: a memory record's fields are {fields.nbytes} bytes, expected "
                                  f"{head + _MARGIN_V2.size + vector_size}")
            (margin,) = _MARGIN_V2.unpack_from(fields, head)
            head += _MARGIN_V2.size
        chunk = MemoryChunk(bytes(fields[head:]), n_tokens, length, check, margin)
        self._check(chunk, ctx.vector_dim, where)
        return chunk

    def _check(self, chunk: MemoryChunk, vector_dim: int, where: str) -> None:
        self._check_common(chunk, where)
        self.vector_format.check(chunk.vector, vector_dim, where)

    @staticmethod
    def _check_common(chunk, where: str) -> None:
        """The fields every memory kind has: n_tokens and min_margin."""
        wire.check_int(chunk.n_tokens, f"{where}: n_tokens", 1, wire.MAX_TOKENS_PER_CHUNK)
        margin = chunk.min_margin
        if not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
            raise FormatError(f"{where}: min_margin {margin!r} is not a finite number >= 0")

    def stored_bytes(self, chunk: MemoryChunk) -> int:
        return len(chunk.vector)

    def margin(self, chunk: MemoryChunk) -> float:
        return chunk.min_margin

    def tokens(self, chunk: MemoryChunk) -> int:
        return chunk.n_tokens

    def describe(self, chunk) -> dict:
        row = super().describe(chunk)
        return {**row, "standalone": row["corrections"] == 0}

    def make_chunk(self, payload: bytes, n_tokens: int, length: int, check: int, min_margin: float,
                   vector_dim: int) -> MemoryChunk:
        """A chunk of this kind from what training stored (:meth:`llmzip.forms.Fp16Form.store`'s payload)."""
        chunk = MemoryChunk(payload, n_tokens, length, check, min_margin)
        self._check(chunk, vector_dim, "trained chunk")
        return chunk

    def export_row(self, chunk: MemoryChunk, archive) -> dict:
        return {"n_tokens": chunk.n_tokens, "min_margin": chunk.min_margin,
                "vector": self.vector_format.to_numpy(chunk.vector)}

    # ---------------------------------------------------------------- model half

    def check_before_model(self, items, archive) -> None:
        if archive.version[0] == 1:  # format 2 has one template per kind code (CODEC.md)
            format1.check_template(archive.header.settings)
        check_token_counts(items)

    def restore(self, items, loaded, archive, on_done=None, runner=None):
        """Decode in the archive's groups (format 1 recorded none: 0.1.0 verified at batch
        1, and its margins absorb the new batch shapes, as tests/test_compat.py shows). A
        chunk whose bytes miss their check is decoded once more alone before the codec's
        checks decide: a second computation, never a way around them."""
        group = decode_group(archive)
        chunks = [chunk for _, chunk in items]
        results = self.decode(loaded, chunks, group, on_done=on_done, runner=runner)
        for (index, chunk), result in zip(items, results):
            data = restored_text(loaded, result.token_ids)
            if len(data) != chunk.length or wire.chunk_check(data, archive.version) != chunk.check:
                [result] = self.decode(loaded, [chunk], 1)
                data = restored_text(loaded, result.token_ids)
            yield Restored(index, data, result.min_margin)

    def decode(self, loaded, chunks: list, group: int, on_done=None, runner=None) -> list:
        """The decode computation of CODEC.md for ``chunks`` (memory chunks, in archive
        order): consecutive groups of ``group`` rows (:meth:`decode_group`), on ``runner``'s
        workers if given (:func:`map_calls`). Compress runs exactly this on what it stores,
        and records the margins it measures."""
        calls = [(chunks[start : start + group],) for start in range(0, len(chunks), group)]
        units = [sum(map(self.work, batch)) for batch, in calls]
        return [result for results in map_calls(loaded, self.decode_group, calls, units, on_done, runner)
                for result in results]

    def decode_group(self, loaded, batch: list, on_done=None) -> list:
        """One decode group: its rows as one batch through ``decode_batch``."""
        from llmzip.decode import DecodeResult, decode_batch

        vectors = self.vectors(loaded, batch)  # (B, d)
        corrections = [self.corrections(chunk) for chunk in batch]
        decoded = decode_batch(loaded.model, vectors, [chunk.n_tokens for chunk in batch], forced=corrections,
                               on_step=on_done)
        return [DecodeResult(token_ids=[], min_margin=float("-inf")) if row.failed else result
                for row, result in zip(corrections, decoded)]

    def corrections(self, chunk):
        """The :class:`Corrections` the decode of ``chunk`` takes instead of
        its greedy choices: none but in kinds memory-int-coded and memory-int-lm."""
        return Corrections()

    def vectors(self, loaded, chunks):
        """The (B, d) tensor of the vectors the model is prompted with, exactly as stored (float16)."""
        import torch

        raw = bytearray(b"".join(chunk.vector for chunk in chunks))
        return torch.frombuffer(raw, dtype=torch.float16).view(len(chunks), -1)  # (B, d)


def _float32_at_most(value: float) -> float:
    """The largest float32 not above ``value`` (>= 0): a recorded margin never overstates."""
    (rounded,) = _MARGIN_V2.unpack(_MARGIN_V2.pack(value))
    if rounded > value:  # rounded to nearest, upwards: take the next float32 towards zero
        (bits,) = struct.unpack("<I", _MARGIN_V2.pack(rounded))
        (rounded,) = _MARGIN_V2.unpack(struct.pack("<I", bits - 1))
    return rounded


KIND = MemoryKind()
