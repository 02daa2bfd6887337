"""Kind ``stored`` (code 7, format 2.5): a chunk stored as its raw bytes, in its record.

For bytes that neither the model nor zstd make smaller (random or already compressed
data, a few bytes of text): a zstd frame around incompressible bytes costs 9-13 bytes more
than the bytes themselves, a stored record nothing but its framing. The writer stores the
whole input this way when that is the smallest archive (format/SPEC.md, "Kind 7").
"""

from __future__ import annotations

from dataclasses import dataclass

from llmzip import wire
from llmzip.errors import ChecksumError, FormatError
from llmzip.kinds.base import Kind, Restored, WireContext


@dataclass(frozen=True)
class StoredChunk:
    """A chunk held as its own bytes in its record's fields."""

    data: bytes

    @property
    def length(self) -> int:
        return len(self.data)

    @property
    def check(self) -> int:
        return wire.chunk_check(self.data)


class StoredKind(Kind):
    name = "stored"
    code = 7
    chunk_type = StoredChunk
    minor = 5
    written = True  # whole inputs (and runs of chunks) that nothing makes smaller

    def encode_fields(self, chunk: StoredChunk, ctx: WireContext) -> bytes:
        if not isinstance(chunk.data, bytes):
            raise FormatError(f"data is {type(chunk.data).__name__}, not bytes")
        return chunk.data

    def decode_fields(self, fields, length, check, ctx, where) -> StoredChunk:
        if tuple(ctx.version) < (2, self.minor):
            raise FormatError(f"{where}: kind stored (7) is not defined in format {ctx.version[0]}.{ctx.version[1]}")
        if fields.nbytes != length:
            raise FormatError(f"{where}: a stored record's fields are its {length} bytes, not {fields.nbytes}")
        data = bytes(fields)
        computed = wire.chunk_check(data, ctx.version)
        if computed != check:
            raise ChecksumError(f"{where}: its stored bytes hash to {computed:x}, the record says {check:x}")
        return StoredChunk(data)

    def stored_bytes(self, chunk: StoredChunk) -> int:
        return chunk.length

    def restore(self, items, loaded, archive, on_done=None, runner=None):
        for index, chunk in items:
            yield Restored(index, chunk.data)


KIND = StoredKind()
