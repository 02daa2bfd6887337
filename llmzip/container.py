"""The .lmz container, format 1.0: pack and unpack archives, read them without a model.

``format/SPEC.md`` defines the format; this module is one reader and writer of it. It
imports no torch, so ``llmzip.read_header`` and ``llmzip info`` work without a model and
start in well under a second.

Archives are untrusted input (DESIGN.md, invariant 5). The reader checks every length
against the format's limits and against the bytes actually present before it slices or
allocates, parses the msgpack header with explicit size limits and a nesting limit, and
compares the zstd frame's declared content size with what the chunk records promise before
it decompresses anything. Every failure is an ``LmzError`` subclass whose one-line message
names the field and its offset; no other exception escapes ``unpack`` or ``read_header``.

The writer applies the reader's own checks to what it is given, so ``pack`` never produces
an archive that ``unpack`` rejects.
"""

from __future__ import annotations

import math
import os
import reprlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Union

import msgpack
import xxhash
import zstandard

from llmzip.errors import (
    ChecksumError,
    FormatError,
    InputError,
    LimitError,
    UnsupportedVersionError,
)

MAGIC = b"\x89LMZ\r\n\x1a\n"
VERSION = (1, 0)  # (major, minor) this module writes, and the newest it fully reads
MUST_UNDERSTAND_FLAGS = 0  # must-understand flag bits defined in format 1.0: none

# Hard limits (SPEC.md, "Limits"). A reader rejects anything beyond them before allocating.
MAX_ARCHIVE_SIZE = 1 << 32
MAX_HEADER_SIZE = 1 << 20
MAX_INPUT_SIZE = 1 << 30
MAX_CHUNKS = 1 << 24
MAX_CHUNK_LENGTH = 1 << 20
MAX_TOKENS_PER_CHUNK = 1 << 16
MAX_VECTOR_DIM = 1 << 15
MAX_ENTRIES = 256  # per header map or array
MAX_KEY_SIZE = 256  # bytes of UTF-8
MAX_STRING_SIZE = 1 << 16  # bytes of UTF-8
MAX_DEPTH = 2  # the header map is level 1; maps and arrays inside it are level 2
MAX_WINDOW_SIZE = 1 << 27

# Fixed-layout parts, all little-endian (SPEC.md, "Layout").
PREFIX = struct.Struct("<8sBBHHI")  # magic, major, minor, must-understand, ignorable, header size
RECORD = struct.Struct("<BIIQ")  # kind, size of the kind's fields, chunk length, chunk xxh64
MEMORY_FIELDS = struct.Struct("<Id")  # n_tokens, min_margin; the vector follows
TRAILER = struct.Struct("<Q")  # xxh64 of every byte before it
ZSTD_FRAME_MAGIC = b"\x28\xb5\x2f\xfd"

_U64_MAX = (1 << 64) - 1
_HEADER_FIELDS = ("model", "settings", "vector_dim", "input_size", "input_xxh64", "chunk_count",
                  "metadata")
# Maps a byte to 1 when, as the high byte of a little-endian fp16, its exponent bits are all
# ones (infinity or NaN). Translating a vector's high bytes through it finds them in C.
_FP16_NONFINITE = bytes(int(b & 0x7C == 0x7C) for b in range(256))


def checksum(data) -> int:
    """xxh64 with seed 0: the one checksum of chunks, inputs and the archive trailer."""
    return xxhash.xxh64_intdigest(data)


@dataclass(frozen=True)
class Header:
    """Archive-wide fields, stored as the msgpack header (SPEC.md, "Header")."""

    model: dict  # the model layer's ModelIdentity.to_dict(): str -> str | int | None
    settings: dict  # codec settings: str -> str | int | float | bool | None
    vector_dim: int  # d: every memory chunk holds exactly d fp16 values
    input_size: int  # bytes of the whole input
    input_xxh64: int  # checksum() of the whole input
    metadata: dict  # free-form str -> str (creator, creation time, ...)


@dataclass(frozen=True)
class MemoryChunk:
    """A chunk the frozen model regenerates from one memory vector by greedy decoding."""

    kind: ClassVar[str] = "memory"
    code: ClassVar[int] = 1

    vector: bytes  # 2 * vector_dim bytes: fp16, little-endian
    n_tokens: int  # tokens the decoder must generate
    length: int  # bytes of the chunk's text
    xxh64: int  # checksum() of the chunk's bytes
    min_margin: float  # smallest top-1/top-2 logit gap seen at compress-time verification


@dataclass(frozen=True)
class FallbackChunk:
    """A chunk stored as its bytes. The container compresses and checks them itself."""

    kind: ClassVar[str] = "zstd"
    code: ClassVar[int] = 2

    data: bytes

    @property
    def length(self) -> int:
        return len(self.data)


Chunk = Union[MemoryChunk, FallbackChunk]


@dataclass(frozen=True)
class Archive:
    """A whole archive as ``unpack`` returns it, every container-level check passed."""

    version: tuple[int, int]
    header: Header
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True)
class _OpaqueChunk:
    """A record of a kind added by a newer minor version: its framing and length are
    known, so ``read_header`` can still describe the archive, but it cannot be decoded."""

    code: int
    length: int
    offset: int

    @property
    def kind(self) -> str:
        return f"kind {self.code}"


@dataclass(frozen=True)
class ArchiveInfo:
    """What ``read_header`` learns without a model: everything ``llmzip info`` shows.

    ``read_header`` runs every check ``unpack`` runs, so an archive it describes is intact
    up to what only the model can check (that memory vectors regenerate their chunks).
    """

    version: tuple[int, int]
    header: Header
    archive_size: int
    chunk_counts: dict  # kind -> number of chunks; "memory" and "zstd" always present
    input_bytes: dict  # kind -> input bytes those chunks restore
    vector_bytes: int  # bytes of fp16 vectors
    fallback_bytes: int  # bytes of the zstd frame holding every fallback chunk
    min_margin: float | None  # smallest min_margin of any memory chunk

    @property
    def overhead_bytes(self) -> int:
        """Archive bytes that are neither vectors nor fallback: framing, header, records."""
        return self.archive_size - self.vector_bytes - self.fallback_bytes

    @property
    def ratio(self) -> float | None:
        """archive size / input size, as ``xz --list`` reports it (lower is smaller)."""
        return self.archive_size / self.header.input_size if self.header.input_size else None

    def to_dict(self) -> dict:
        """The JSON-ready form behind ``llmzip info --json`` (its keys are stable)."""
        return {
            "format_version": f"{self.version[0]}.{self.version[1]}",
            "archive_size": self.archive_size,
            "input_size": self.header.input_size,
            "input_xxh64": f"{self.header.input_xxh64:016x}",
            "ratio": self.ratio,
            "vector_dim": self.header.vector_dim,
            "chunks": dict(self.chunk_counts),
            "input_bytes": dict(self.input_bytes),
            "stored_bytes": {
                "vectors": self.vector_bytes,
                "fallback": self.fallback_bytes,
                "overhead": self.overhead_bytes,
            },
            "min_margin": self.min_margin,
            "model": dict(self.header.model),
            "settings": dict(self.header.settings),
            "metadata": dict(self.header.metadata),
        }


@dataclass(frozen=True)
class _Parsed:
    version: tuple[int, int]
    header: Header
    chunks: list  # MemoryChunk | FallbackChunk | _OpaqueChunk, in input order
    archive_size: int
    fallback_bytes: int


# --------------------------------------------------------------------------- writing


def pack(header: Header, chunks: Sequence[Chunk], *, zstd_level: int = 19) -> bytes:
    """Build a format 1.0 archive: ``header`` and ``chunks`` in input order.

    Fallback chunks are compressed together as one zstd frame at ``zstd_level`` (SPEC.md
    says why one frame). Raises ``FormatError`` or ``LimitError`` for anything the reader
    would reject: a writer must never produce an archive it cannot read back.
    """
    header_bytes = _encode_header(header, len(chunks))
    records, fallback = [], []
    for index, chunk in enumerate(chunks):
        where = f"chunk {index}"
        if isinstance(chunk, MemoryChunk):
            _check_memory(chunk, header.vector_dim, where)
            fields = MEMORY_FIELDS.pack(chunk.n_tokens, chunk.min_margin) + chunk.vector
            records.append(RECORD.pack(chunk.code, len(fields), chunk.length, chunk.xxh64) + fields)
        elif isinstance(chunk, FallbackChunk):
            if not isinstance(chunk.data, bytes):
                raise FormatError(f"{where}: data is {_type_name(chunk.data)}, not bytes")
            _check_int(chunk.length, f"{where}: length", 1, MAX_CHUNK_LENGTH)
            records.append(RECORD.pack(chunk.code, 0, chunk.length, checksum(chunk.data)))
            fallback.append(chunk.data)
        else:
            raise FormatError(f"{where}: {_type_name(chunk)} is not a MemoryChunk or FallbackChunk")
    _check_lengths_sum(chunks, header.input_size)
    frame = _compress(b"".join(fallback), zstd_level) if fallback else b""
    prefix = PREFIX.pack(MAGIC, *VERSION, 0, 0, len(header_bytes))
    body = b"".join([prefix, header_bytes, *records, frame])
    size = len(body) + TRAILER.size
    if size > MAX_ARCHIVE_SIZE:
        raise LimitError(f"archive would be {size} bytes, over the limit {MAX_ARCHIVE_SIZE}")
    return body + TRAILER.pack(checksum(body))


def _encode_header(header: Header, chunk_count: int) -> bytes:
    """The header as canonical msgpack (keys sorted), checked by the reader's own rules."""
    fields = {
        "model": header.model,
        "settings": header.settings,
        "vector_dim": header.vector_dim,
        "input_size": header.input_size,
        "input_xxh64": header.input_xxh64,
        "chunk_count": chunk_count,
        "metadata": header.metadata,
    }
    _decode_header(fields)
    canonical = {
        key: dict(sorted(value.items())) if isinstance(value, dict) else value
        for key, value in sorted(fields.items())
    }
    encoded = msgpack.packb(canonical, use_bin_type=True)
    if len(encoded) > MAX_HEADER_SIZE:
        raise LimitError(f"header: {len(encoded)} bytes of msgpack, over the limit {MAX_HEADER_SIZE}")
    return encoded


def _compress(data: bytes, level: int) -> bytes:
    """One zstd frame that declares its content size; no frame checksum (the chunks'
    xxh64 and the trailer already cover these bytes) and no dictionary."""
    compressor = zstandard.ZstdCompressor(
        level=level, write_content_size=True, write_checksum=False, write_dict_id=False
    )
    return compressor.compress(data)


# --------------------------------------------------------------------------- reading


def unpack(data) -> Archive:
    """Parse and fully check an archive held in memory (any bytes-like object).

    Fallback chunks come back decompressed, their length and xxh64 checked. Memory chunks
    come back as stored: only the model can check them (the codec compares their decoded
    bytes with ``length`` and ``xxh64``).
    """
    parsed = _parse(data)
    for index, chunk in enumerate(parsed.chunks):
        if isinstance(chunk, _OpaqueChunk):
            raise UnsupportedVersionError(
                f"chunk {index} (record at offset {chunk.offset}): {chunk.kind} is from format "
                f"{parsed.version[0]}.{parsed.version[1]}; this reader knows kinds of format "
                f"{VERSION[0]}.{VERSION[1]} (a newer llmzip can extract it)"
            )
    return Archive(parsed.version, parsed.header, tuple(parsed.chunks))


def read_header(path_or_bytes) -> ArchiveInfo:
    """Describe an archive (a path, or its bytes) without a model: what ``llmzip info`` shows.

    Runs every check ``unpack`` runs, and also describes archives from a newer minor
    version whose chunk kinds this reader cannot decode.
    """
    if isinstance(path_or_bytes, (str, os.PathLike)):
        path_or_bytes = _read_file(path_or_bytes)
    parsed = _parse(path_or_bytes)
    counts = {MemoryChunk.kind: 0, FallbackChunk.kind: 0}
    input_bytes = dict(counts)
    for chunk in parsed.chunks:
        counts[chunk.kind] = counts.get(chunk.kind, 0) + 1
        input_bytes[chunk.kind] = input_bytes.get(chunk.kind, 0) + chunk.length
    memory = [chunk for chunk in parsed.chunks if isinstance(chunk, MemoryChunk)]
    return ArchiveInfo(
        version=parsed.version,
        header=parsed.header,
        archive_size=parsed.archive_size,
        chunk_counts=counts,
        input_bytes=input_bytes,
        vector_bytes=sum(len(chunk.vector) for chunk in memory),
        fallback_bytes=parsed.fallback_bytes,
        min_margin=min((chunk.min_margin for chunk in memory), default=None),
    )


def _read_file(path) -> bytes:
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > MAX_ARCHIVE_SIZE:
                raise LimitError(f"archive is {size} bytes, over the limit {MAX_ARCHIVE_SIZE}")
            if size:  # one read of the file's size (+1 notices growth); _parse bounds the result
                return file.read(size + 1)
            # A pipe has no size. Read in blocks: file.read(MAX_ARCHIVE_SIZE + 1) would
            # allocate 4 GiB up front, a MemoryError under any address-space limit.
            blocks, total = [], 0
            while total <= MAX_ARCHIVE_SIZE and (block := file.read(1 << 20)):
                blocks.append(block)
                total += len(block)
            return b"".join(blocks)
    except OSError as exc:
        raise InputError(f"cannot read archive: {exc.strerror or exc}") from None


class _Record(NamedTuple):
    """A chunk record's framing, before its kind-specific fields are decoded."""

    index: int
    offset: int
    code: int
    length: int
    xxh64: int
    fields: memoryview

    @property
    def where(self) -> str:
        return f"chunk {self.index} (record at offset {self.offset})"


def _parse(data) -> _Parsed:
    """Every container-level check, in the order of SPEC.md's "Reading, step by step"."""
    view = memoryview(data).cast("B")
    major, minor, header_end = _check_prefix(view)
    body_end = view.nbytes - TRAILER.size
    (stored,) = TRAILER.unpack_from(view, body_end)
    computed = checksum(view[:body_end])
    if stored != computed:
        raise ChecksumError(
            f"trailer checksum (offset {body_end}) is {stored:016x}, but the bytes before it "
            f"hash to {computed:016x}: the archive is corrupted or truncated"
        )
    header, chunk_count = _decode_header(_unpack_msgpack(view[PREFIX.size : header_end]))
    records, frame_offset = _read_records(view, header_end, body_end, chunk_count, minor)
    _check_lengths_sum(records, header.input_size)
    fallback_size = sum(record.length for record in records if record.code == FallbackChunk.code)
    fallback = _decompress(view[frame_offset:body_end], frame_offset, fallback_size)
    chunks = _decode_chunks(records, fallback, header.vector_dim)
    return _Parsed((major, minor), header, chunks, view.nbytes, body_end - frame_offset)


def _check_prefix(view: memoryview) -> tuple[int, int, int]:
    """Size, magic, version, flags and header size; returns (major, minor, header end).

    These come before the trailer because a later major version or must-understand flag
    may lay out the rest of the file, trailer included, differently.
    """
    size = view.nbytes
    if size > MAX_ARCHIVE_SIZE:
        raise LimitError(f"archive is {size} bytes, over the limit {MAX_ARCHIVE_SIZE}")
    head = bytes(view[: len(MAGIC)])
    if head != MAGIC:
        if MAGIC.startswith(head):
            raise FormatError(f"truncated: {size} bytes, inside the {len(MAGIC)}-byte magic number")
        raise FormatError(f"not an llmzip archive: magic number is {head.hex()}, expected {MAGIC.hex()}")
    if size < PREFIX.size + TRAILER.size:
        raise FormatError(f"truncated: {size} bytes, under the {PREFIX.size + TRAILER.size}-byte minimum")
    _, major, minor, must_understand, _ignorable, header_size = PREFIX.unpack_from(view)
    if major != VERSION[0]:
        raise UnsupportedVersionError(
            f"format version {major}.{minor} (offset 8) is not supported; this reader reads {VERSION[0]}.x"
        )
    unknown_flags = must_understand & ~MUST_UNDERSTAND_FLAGS
    if unknown_flags:
        raise UnsupportedVersionError(f"unknown must-understand flags 0x{unknown_flags:04x} (offset 10)")
    if header_size > MAX_HEADER_SIZE:
        raise LimitError(f"header size {header_size} (offset 14) is over the limit {MAX_HEADER_SIZE}")
    if PREFIX.size + header_size > size - TRAILER.size:
        raise FormatError(f"truncated: header size {header_size} (offset 14) runs past the end of the file")
    return major, minor, PREFIX.size + header_size


def _read_records(view: memoryview, offset: int, end: int, count: int, minor: int):
    """The framing of ``count`` records from ``offset``, every size bounded before use.

    Returns the records and the offset just after the last one, where the frame starts.
    """
    if count > (end - offset) // RECORD.size:
        raise FormatError(
            f"header['chunk_count'] is {count}, but the {end - offset} bytes from offset "
            f"{offset} to the trailer hold at most {(end - offset) // RECORD.size} records"
        )
    records = []
    for index in range(count):
        if offset + RECORD.size > end:
            raise FormatError(f"truncated: chunk {index} (record at offset {offset}) runs into the trailer")
        code, fields_size, length, digest = RECORD.unpack_from(view, offset)
        start = offset + RECORD.size
        record = _Record(index, offset, code, length, digest, view[start : start + fields_size])
        if fields_size > end - start:
            raise FormatError(f"{record.where}: its {fields_size} bytes of fields run into the trailer")
        _check_int(length, f"{record.where}: length", 1, MAX_CHUNK_LENGTH)
        if code not in (MemoryChunk.code, FallbackChunk.code) and minor <= VERSION[1]:
            raise FormatError(f"{record.where}: unknown chunk kind {code} in a format 1.{minor} archive")
        records.append(record)
        offset = start + fields_size
    return records, offset


def _decode_chunks(records: list, fallback: bytes, vector_dim: int) -> list:
    """Each record's kind-specific fields; zstd chunks take consecutive slices of ``fallback``."""
    chunks, position = [], 0
    for record in records:
        if record.code == MemoryChunk.code:
            chunks.append(_memory_chunk(record, vector_dim))
        elif record.code == FallbackChunk.code:
            if record.fields.nbytes:
                size = record.fields.nbytes
                raise FormatError(f"{record.where}: a zstd record has no fields, not {size} bytes")
            data = fallback[position : position + record.length]
            position += record.length
            if checksum(data) != record.xxh64:
                raise ChecksumError(
                    f"{record.where}: its fallback bytes hash to {checksum(data):016x}, "
                    f"the record says {record.xxh64:016x}"
                )
            chunks.append(FallbackChunk(data))
        else:
            chunks.append(_OpaqueChunk(record.code, record.length, record.offset))
    return chunks


def _memory_chunk(record: _Record, vector_dim: int) -> MemoryChunk:
    expected = MEMORY_FIELDS.size + 2 * vector_dim
    if record.fields.nbytes != expected:
        size = record.fields.nbytes
        raise FormatError(f"{record.where}: a memory record has {expected} bytes of fields, not {size}")
    n_tokens, min_margin = MEMORY_FIELDS.unpack_from(record.fields)
    vector = bytes(record.fields[MEMORY_FIELDS.size :])
    chunk = MemoryChunk(vector, n_tokens, record.length, record.xxh64, min_margin)
    _check_memory(chunk, vector_dim, record.where)
    return chunk


def _decompress(frame: memoryview, offset: int, expected: int) -> bytes:
    """Decompress the fallback frame after checking its header against the ``expected``
    size the zstd records add up to, so no frame makes the reader allocate more."""
    where = f"fallback frame at offset {offset}"
    if not expected:
        if frame.nbytes:
            raise FormatError(f"{where}: {frame.nbytes} bytes present, but no chunk is of kind zstd")
        return b""
    if bytes(frame[: len(ZSTD_FRAME_MAGIC)]) != ZSTD_FRAME_MAGIC:
        raise FormatError(f"{where}: does not start with the zstd magic number {ZSTD_FRAME_MAGIC.hex()}")
    try:
        params = zstandard.get_frame_parameters(frame)
    except zstandard.ZstdError as exc:
        raise FormatError(f"{where}: bad zstd frame header ({exc})") from None
    if params.content_size != expected:
        unknown = params.content_size == zstandard.CONTENTSIZE_UNKNOWN
        declared = "no content size" if unknown else f"{params.content_size} bytes"
        raise FormatError(f"{where}: declares {declared}, but the zstd chunks hold {expected} bytes")
    if params.dict_id:
        raise FormatError(f"{where}: needs zstd dictionary {params.dict_id}; format 1.0 uses none")
    if params.window_size > MAX_WINDOW_SIZE:
        raise LimitError(f"{where}: window size {params.window_size} is over the limit {MAX_WINDOW_SIZE}")
    decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_SIZE)
    try:
        data = decompressor.decompress(frame, max_output_size=expected, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise FormatError(f"{where}: {exc}") from None
    if len(data) != expected:
        raise FormatError(f"{where}: decompressed to {len(data)} bytes, expected {expected}")
    return data


# --------------------------------------------------------------------------- checks
# Shared by the reader and the writer, so both apply exactly the same rules.


def _unpack_msgpack(raw: memoryview):
    """Decode the header bytes: exactly one msgpack object, with every length bounded
    before msgpack allocates for it, and no duplicate map keys."""
    try:
        return msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            object_pairs_hook=_unique_keys,
            max_str_len=MAX_STRING_SIZE,
            max_bin_len=MAX_STRING_SIZE,  # bin and ext are bounded here, refused by _check_value
            max_ext_len=MAX_STRING_SIZE,
            max_array_len=MAX_ENTRIES,
            max_map_len=MAX_ENTRIES,
        )
    except msgpack.StackError:
        raise LimitError(f"header (offset {PREFIX.size}): msgpack nested too deep to parse") from None
    except ValueError as exc:  # every other msgpack decoding error, and bad UTF-8
        error = LimitError if "exceeds max_" in str(exc) else FormatError
        raise error(f"header (offset {PREFIX.size}): bad msgpack: {exc or 'malformed data'}") from None


def _unique_keys(pairs: list) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise FormatError(f"header (offset {PREFIX.size}): a msgpack map repeats a key")
    return result


def _decode_header(fields) -> tuple[Header, int]:
    """Check the header's decoded msgpack map; return it as a Header plus chunk_count.

    Unknown keys are allowed (a later minor version may add optional ones) but are
    bounded like the rest: values are scalars, or maps or arrays of scalars.
    """
    if not isinstance(fields, dict):
        raise FormatError(f"header: expected a msgpack map, got {_type_name(fields)}")
    _check_value(fields, "header", 1)
    missing = [name for name in _HEADER_FIELDS if name not in fields]
    if missing:
        raise FormatError(f"header: missing field(s) {', '.join(missing)}")
    header = Header(
        model=_scalar_map(fields, "model", (str, int, type(None))),
        settings=_scalar_map(fields, "settings", (str, int, float, type(None))),
        vector_dim=_check_int(fields["vector_dim"], "header['vector_dim']", 1, MAX_VECTOR_DIM),
        input_size=_check_int(fields["input_size"], "header['input_size']", 0, MAX_INPUT_SIZE),
        input_xxh64=_check_int(fields["input_xxh64"], "header['input_xxh64']", 0, _U64_MAX),
        metadata=_scalar_map(fields, "metadata", (str,)),
    )
    return header, _check_int(fields["chunk_count"], "header['chunk_count']", 0, MAX_CHUNKS)


def _check_value(value, where: str, depth: int) -> None:
    """Bound one header value: type, UTF-8 size, entry count and nesting depth."""
    if isinstance(value, str):
        if _utf8_size(value, where) > MAX_STRING_SIZE:
            raise LimitError(f"{where}: string over the limit of {MAX_STRING_SIZE} bytes")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise FormatError(f"{where}: {value} is not a finite number")
    elif isinstance(value, int):
        if not -(1 << 63) <= value <= _U64_MAX:
            raise LimitError(f"{where}: {value} does not fit msgpack's 64-bit integers")
    elif isinstance(value, (dict, list)):
        if depth > MAX_DEPTH:
            raise LimitError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        if len(value) > MAX_ENTRIES:
            raise LimitError(f"{where}: {len(value)} entries, over the limit {MAX_ENTRIES}")
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(value, dict):
                _check_key(key, where)
            _check_value(item, f"{where}[{reprlib.repr(key)}]", depth + 1)
    elif value is not None:
        raise FormatError(f"{where}: unsupported type {_type_name(value)}")


def _check_key(key, where: str) -> None:
    if not isinstance(key, str):
        raise FormatError(f"{where}: map key {reprlib.repr(key)} is not a string")
    if not key or _utf8_size(key, where) > MAX_KEY_SIZE:
        raise LimitError(f"{where}: map key {reprlib.repr(key)} is empty or over {MAX_KEY_SIZE} bytes")


def _utf8_size(text: str, where: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise FormatError(f"{where}: string {reprlib.repr(text)} is not valid UTF-8") from None


def _scalar_map(fields: dict, name: str, types: tuple) -> dict:
    """Header field ``name``: a map whose values are all of ``types`` (bool counts as int)."""
    value, where = fields[name], f"header[{name!r}]"
    if not isinstance(value, dict):
        raise FormatError(f"{where}: expected a map, got {_type_name(value)}")
    for key, item in value.items():
        if not isinstance(item, types):
            raise FormatError(f"{where}[{reprlib.repr(key)}]: {_type_name(item)} is not allowed here")
    return value


def _check_int(value, where: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise FormatError(f"{where}: expected an integer, got {_type_name(value)}")
    if value < low:
        raise FormatError(f"{where}: {value} is below the minimum {low}")
    if value > high:
        raise LimitError(f"{where}: {value} is over the limit {high}")
    return value


def _check_memory(chunk: MemoryChunk, vector_dim: int, where: str) -> None:
    _check_int(chunk.n_tokens, f"{where}: n_tokens", 1, MAX_TOKENS_PER_CHUNK)
    _check_int(chunk.length, f"{where}: length", 1, MAX_CHUNK_LENGTH)
    _check_int(chunk.xxh64, f"{where}: xxh64", 0, _U64_MAX)
    margin = chunk.min_margin
    if not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
        raise FormatError(f"{where}: min_margin {margin!r} is not a finite number >= 0")
    if not isinstance(chunk.vector, bytes) or len(chunk.vector) != 2 * vector_dim:
        raise FormatError(f"{where}: vector is not {2 * vector_dim} bytes ({vector_dim} fp16 values)")
    if 1 in chunk.vector[1::2].translate(_FP16_NONFINITE):
        raise FormatError(f"{where}: vector holds an infinite or NaN fp16 value")


def _check_lengths_sum(chunks: Sequence, input_size: int) -> None:
    total = sum(chunk.length for chunk in chunks)
    if total != input_size:
        raise FormatError(f"chunk lengths add up to {total} bytes, but header['input_size'] is {input_size}")


def _type_name(value) -> str:
    return "nil" if value is None else type(value).__name__
