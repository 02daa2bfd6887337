"""Kind ``zstd`` (code 2): a chunk stored as its bytes, in the archive's one zstd frame.

Whatever no other kind can hold exactly is stored this way, so every input has an archive.
All zstd chunks of an archive share one frame at its end (format/SPEC.md, "Fallback frame"):
one frame over all of them is 1.26-2.3x smaller than a frame per chunk on the paper's
corpora, and a format 2 writer merges consecutive zstd chunks into one record.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmzip import wire
from llmzip.errors import ChecksumError, FormatError
from llmzip.kinds.base import Kind, Restored, WireContext


@dataclass(frozen=True)
class FallbackChunk:
    """A chunk stored as its bytes. The container compresses and checks them itself."""

    data: bytes

    @property
    def length(self) -> int:
        return len(self.data)


class ZstdKind(Kind):
    name = "zstd"
    code = 2
    chunk_type = FallbackChunk
    in_fallback_frame = True
    written = True  # whatever no other kind holds exactly

    def encode_fields(self, chunk: FallbackChunk, ctx: WireContext) -> bytes:
        if not isinstance(chunk.data, bytes):
            raise FormatError(f"data is {type(chunk.data).__name__}, not bytes")
        return b""

    def decode_fields(self, fields, length, check, ctx, where) -> FallbackChunk:
        if fields.nbytes:
            raise FormatError(f"{where}: a zstd record has no fields, not {fields.nbytes} bytes")
        data = ctx.take_fallback(length)
        computed = wire.chunk_check(data, ctx.version)
        if computed != check:
            raise ChecksumError(f"{where}: its fallback bytes hash to {computed:x}, the record says {check:x}")
        return FallbackChunk(data)

    def restore(self, items, loaded, archive, on_done=None, runner=None):
        for index, chunk in items:
            yield Restored(index, chunk.data)


KIND = ZstdKind()
