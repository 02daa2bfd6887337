"""Kind ``memory`` (code 1): a chunk the frozen model regenerates from one memory vector.

The record holds the vector, the number of tokens to generate and the smallest top-1/top-2
logit gap measured when compress ran the extract computation on it. format/CODEC.md says
exactly how a vector is decoded; this module is the one implementation of that.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from llmzip import container
from llmzip.errors import FormatError
from llmzip.kinds.base import Kind, Restored, WireContext

TEMPLATE = "bos+mem"  # the prompt: the model's BOS embedding, then the vector (CODEC.md)

_FIELDS_V1 = struct.Struct("<Id")  # format 1: n_tokens u32, min_margin f64; the vector follows
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
    check: int  # container.chunk_check() of the chunk's bytes
    min_margin: float  # smallest top-1/top-2 logit gap seen at compress-time verification


class MemoryKind(Kind):
    name = "memory"
    code = 1
    chunk_type = MemoryChunk
    needs_model = True
    vector_format = FP16

    # ---------------------------------------------------------------- wire half

    def encode_fields(self, chunk: MemoryChunk, ctx: WireContext) -> bytes:
        self._check(chunk, ctx.vector_dim, "memory chunk")
        if ctx.version[0] == 1:
            return _FIELDS_V1.pack(chunk.n_tokens, chunk.min_margin) + chunk.vector
        margin = _float32_at_most(chunk.min_margin)
        return container.varint(chunk.n_tokens) + _MARGIN_V2.pack(margin) + chunk.vector

    def decode_fields(self, fields, length, check, ctx, where) -> MemoryChunk:
        vector_size = self.vector_format.size(ctx.vector_dim)
        if ctx.version[0] == 1:
            head = _FIELDS_V1.size
            if fields.nbytes != head + vector_size:
                raise FormatError(f"{where}: a memory record has {head + vector_size} bytes of fields, not {fields.nbytes}")
            n_tokens, margin = _FIELDS_V1.unpack_from(fields)
        else:
            n_tokens, head = container.read_varint(fields, 0, f"{where}: n_tokens")
            if fields.nbytes != head + _MARGIN_V2.size + vector_size:
                raise FormatError(f"{where}: a memory record's fields are {fields.nbytes} bytes, expected "
                                  f"{head + _MARGIN_V2.size + vector_size}")
            (margin,) = _MARGIN_V2.unpack_from(fields, head)
            head += _MARGIN_V2.size
        chunk = MemoryChunk(bytes(fields[head:]), n_tokens, length, check, margin)
        self._check(chunk, ctx.vector_dim, where)
        return chunk

    def _check(self, chunk: MemoryChunk, vector_dim: int, where: str) -> None:
        container.check_int(chunk.n_tokens, f"{where}: n_tokens", 1, container.MAX_TOKENS_PER_CHUNK)
        margin = chunk.min_margin
        if not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
            raise FormatError(f"{where}: min_margin {margin!r} is not a finite number >= 0")
        self.vector_format.check(chunk.vector, vector_dim, where)

    def stored_bytes(self, chunk: MemoryChunk) -> int:
        return len(chunk.vector)

    def margin(self, chunk: MemoryChunk) -> float:
        return chunk.min_margin

    def export_row(self, chunk: MemoryChunk) -> dict:
        return {"n_tokens": chunk.n_tokens, "min_margin": chunk.min_margin,
                "vector": self.vector_format.to_numpy(chunk.vector)}

    # ---------------------------------------------------------------- model half

    def check_before_model(self, items, archive) -> None:
        if archive.version[0] == 1:  # format 2 has one template per kind code (CODEC.md)
            template = archive.header.settings.get("template")
            if template != TEMPLATE:
                raise FormatError(f"archive uses prompt template {template!r}; this llmzip decodes {TEMPLATE!r}")
        for index, chunk in items:
            # Every token of a chunk the writer stores decodes to at least one byte, so more
            # tokens than bytes is corrupt; decoding it anyway would cost up to 65,536 steps.
            if chunk.n_tokens > chunk.length:
                raise FormatError(f"chunk {index}: n_tokens {chunk.n_tokens} exceeds its length {chunk.length} B")

    def restore(self, items, loaded, on_done=None):
        import torch

        from llmzip.chunking import detokenize, text_bytes
        from llmzip.decode import decode

        for index, chunk in items:
            vector = torch.frombuffer(bytearray(chunk.vector), dtype=torch.float16)  # (d,)
            result = decode(loaded.model, vector, chunk.n_tokens)
            yield Restored(index, text_bytes(detokenize(loaded.tokenizer, result.token_ids)), result.min_margin)
            if on_done is not None:
                on_done(chunk.n_tokens)


def _float32_at_most(value: float) -> float:
    """The largest float32 not above ``value`` (>= 0): a recorded margin never overstates."""
    (rounded,) = _MARGIN_V2.unpack(_MARGIN_V2.pack(value))
    if rounded > value:  # rounded to nearest, upwards: take the next float32 towards zero
        (bits,) = struct.unpack("<I", _MARGIN_V2.pack(rounded))
        (rounded,) = _MARGIN_V2.unpack(struct.pack("<I", bits - 1))
    return rounded


KIND = MemoryKind()
