"""The .lmz container: pack and unpack archives, read them without a model.

``format/SPEC.md`` defines the bytes; this module is one reader and writer of them. It
writes format 2.0-2.6 (the smallest version that holds what it writes) and reads 1.x (llmzip 0.1.0) and 2.x. It imports no torch, so
``llmzip.read_header`` and ``llmzip info`` work without a model and start in well under a
second. What a chunk record's kind-specific fields mean is each kind's business
(:mod:`llmzip.kinds`); this module frames records and looks kinds up in the registry.

Archives are untrusted input (docs/DESIGN.md, invariant 5). The reader checks every length
against the format's limits and against the bytes actually present before it slices or
allocates, parses the msgpack header with explicit size limits and a nesting limit, and
compares the zstd frame's declared content size with what the chunk records promise before
it decompresses anything. Every failure is an ``LmzError`` subclass whose one-line message
names the field and its offset; no other exception escapes ``unpack`` or ``read_header``.

The writer applies the reader's own checks to what it is given, so ``pack`` never produces
an archive that ``unpack`` rejects.
"""

from __future__ import annotations

import dataclasses
import math
import os
import reprlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack
import zstandard

from llmzip import kinds
from llmzip.errors import (
    ChecksumError,
    FormatError,
    InputError,
    LimitError,
    UnsupportedVersionError,
)
from llmzip.wire import (  # noqa: F401 - re-exported: the container's API names them too
    MAX_ARCHIVE_SIZE,
    MAX_CHUNK_LENGTH,
    MAX_CHUNKS,
    MAX_DEPTH,
    MAX_ENTRIES,
    MAX_FIELDS_SIZE,
    MAX_HEADER_SIZE,
    MAX_INPUT_SIZE,
    MAX_KEY_SIZE,
    MAX_STRING_SIZE,
    MAX_TOKENS_PER_CHUNK,
    MAX_VECTOR_DIM,
    MAX_WINDOW_SIZE,
    SETTINGS_KEYS,
    VERSION,
    check_int,
    checksum,
    chunk_check,
    read_varint,
    type_name,
    varint,
)

MAGIC = b"\x89LMZ\r\n\x1a\n"
READS = {1: 0, 2: 6}  # major -> the newest minor whose chunk kinds and flags this reader knows
# Must-understand flag bits (offset 10) and the version that defines each (SPEC.md, "Flags").
MODEL_FREE = 0x0001  # 2.5: the header records no model (no d, m or x): no chunk needs one
# 2.6, always with MODEL_FREE: no records; after the header one kind byte (stored or zstd)
# and the whole input in that kind's form. The records' framing (c, n, a record's kind,
# sizes and xxh32: 14-22 B) is what kept 2.5's smallest archives over min(input, zstd) + 32 B.
WHOLE_INPUT = 0x0002
MUST_UNDERSTAND_FLAGS = {MODEL_FREE: (2, 5), WHOLE_INPUT: (2, 6)}
WHOLE_VERSION = MUST_UNDERSTAND_FLAGS[WHOLE_INPUT]  # what a whole-input archive is written as

# Fixed-layout parts, all little-endian (SPEC.md, "Layout").
PREFIX = struct.Struct("<8sBBHHI")  # magic, major, minor, must-understand, ignorable, header size
RECORD_V1 = struct.Struct("<BIIQ")  # kind, size of the kind's fields, chunk length, chunk xxh64
CHECK_V2 = struct.Struct("<I")  # format 2 record: kind u8, fields size varint, length varint, xxh32
TRAILER = struct.Struct("<Q")  # xxh64 of every byte before it
ZSTD_FRAME_MAGIC = b"\x28\xb5\x2f\xfd"
MIN_RECORD_SIZE = {1: RECORD_V1.size, 2: 1 + 1 + 1 + CHECK_V2.size}

_U64_MAX = (1 << 64) - 1

# Header keys by major version: (field, key, required). Format 2 spends one byte a key.
_HEADER_KEYS = {
    1: [("model", "model", True), ("settings", "settings", True), ("vector_dim", "vector_dim", True),
        ("input_size", "input_size", True), ("input_xxh64", "input_xxh64", True),
        ("chunk_count", "chunk_count", True), ("metadata", "metadata", True)],
    2: [("model", "m", True), ("settings", "s", False), ("vector_dim", "d", True), ("input_size", "n", True),
        ("input_xxh64", "x", True), ("chunk_count", "c", True), ("metadata", "w", False)],
}

# What a model-free header (flag MODEL_FREE) leaves out: the model and the input's xxh64;
# what a whole-input one (flag WHOLE_INPUT) also leaves out: what its payload says.
_MODEL_FIELDS = ("model", "vector_dim", "input_xxh64")
_WHOLE_FIELDS = (*_MODEL_FIELDS, "input_size", "chunk_count")


def _absent_fields(flags: int) -> tuple:
    """The header fields an archive with these must-understand ``flags`` MUST NOT hold."""
    return _WHOLE_FIELDS if flags & WHOLE_INPUT else _MODEL_FIELDS if flags & MODEL_FREE else ()


def settings_by_name(settings: dict, version: tuple[int, int]) -> dict:
    """A header's settings map with format 2's one-letter keys spelled out."""
    if version[0] < 2:
        return dict(settings)
    names = {key: name for name, key in SETTINGS_KEYS.items()}
    return {names.get(key, key): value for key, value in settings.items()}


@dataclass(frozen=True)
class Header:
    """Archive-wide fields, stored as the msgpack header (SPEC.md, "Header")."""

    model: dict  # the model layer's identity map: str -> str | int | bytes | None; {} in a model-free archive
    settings: dict  # codec settings: str -> str | int | float | bool | None
    # d: the model's hidden size, which memory kinds' vectors are read with. None: a
    # model-free archive (format 2.5, flag MODEL_FREE): no chunk needs a model, and the
    # header records none.
    vector_dim: int | None
    input_size: int  # bytes of the whole input
    # checksum() of the whole input. A model-free archive does not record it (its chunks
    # are all in the archive, each checked, and the trailer covers every byte): the reader
    # computes it from the chunks, or leaves None where it cannot (a kind from a later version).
    input_xxh64: int | None
    metadata: dict  # free-form str -> str (creator, ...)

    @property
    def model_free(self) -> bool:
        """Whether the archive records no model (every chunk restores without one)."""
        return self.vector_dim is None


@dataclass(frozen=True)
class Archive:
    """A whole archive as ``unpack`` returns it, every container-level check passed.
    ``chunks`` are the registered kinds' chunk objects, in input order."""

    version: tuple[int, int]
    header: Header
    chunks: tuple


@dataclass(frozen=True)
class _OpaqueChunk:
    """A record of a kind added by a newer minor version: its framing and length are
    known, so ``read_header`` can still describe the archive, but it cannot be decoded."""

    code: int
    length: int
    offset: int

    @property
    def kind_name(self) -> str:
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
    chunk_counts: dict  # kind name -> number of chunks
    input_bytes: dict  # kind name -> input bytes those chunks restore
    stored_bytes: dict  # kind name -> archive bytes of their payload (zstd: the shared frame)
    min_margin: float | None  # smallest recorded margin of any chunk that has one
    standalone_chunks: int = 0  # memory vectors that regenerate their chunk alone (no corrections)
    standalone_bytes: int = 0  # input bytes those vectors hold

    @property
    def overhead_bytes(self) -> int:
        """Archive bytes that are no kind's payload: framing, header, records, trailer."""
        return self.archive_size - sum(self.stored_bytes.values())

    @property
    def ratio(self) -> float | None:
        """archive size / input size, as ``xz --list`` reports it (lower is smaller)."""
        return self.archive_size / self.header.input_size if self.header.input_size else None

    def to_dict(self) -> dict:
        """The JSON-ready form behind ``llmzip info --json`` (its keys are stable)."""
        model = {key: value.hex() if isinstance(value, bytes) else value for key, value in self.header.model.items()}
        return {
            "format_version": f"{self.version[0]}.{self.version[1]}",
            "archive_size": self.archive_size,
            "input_size": self.header.input_size,
            "input_xxh64": None if self.header.input_xxh64 is None else f"{self.header.input_xxh64:016x}",
            "ratio": self.ratio,
            "vector_dim": self.header.vector_dim,
            "chunks": dict(self.chunk_counts),
            "input_bytes": dict(self.input_bytes),
            "stored_bytes": {**self.stored_bytes, "overhead": self.overhead_bytes},
            "min_margin": self.min_margin,
            "standalone": {"chunks": self.standalone_chunks, "input_bytes": self.standalone_bytes},
            "model": model,
            "settings": settings_by_name(self.header.settings, self.version),
            "metadata": dict(self.header.metadata),
        }


@dataclass(frozen=True)
class _Parsed:
    version: tuple[int, int]
    header: Header
    chunks: list  # registered kinds' chunk objects | _OpaqueChunk, in input order
    archive_size: int
    fallback_bytes: int


# --------------------------------------------------------------------------- writing


def pack(header: Header, chunks: Sequence, *, zstd_level: int = 19) -> bytes:
    """Build a format 2 archive: ``header`` and ``chunks`` (kind chunk objects) in input order.

    Consecutive zstd chunks become one record (up to the chunk length limit) and all zstd
    chunks share one frame at ``zstd_level`` (SPEC.md says why). A header whose
    ``vector_dim`` is None makes a model-free archive (2.5, flag ``MODEL_FREE``: no ``d``,
    ``m`` or ``x``), which only chunks that need no model may use; when those chunks are
    all stored or all zstd (or none), the whole-input form (2.6, flag ``WHOLE_INPUT``),
    always the smaller. Raises ``FormatError`` or ``LimitError`` for anything the reader
    would reject: a writer must never produce an archive it cannot read back.
    """
    chunks = _merge_fallback(chunks)
    flags = MODEL_FREE if header.model_free else 0
    if header.model_free:
        if header.model:
            raise FormatError("header: a model-free archive (vector_dim None) records no model identity")
        needs = next((kinds.of(chunk).name for chunk in chunks if _needs_model(chunk)), None)
        if needs is not None:
            raise FormatError(f"header: a model-free archive (vector_dim None) cannot hold a {needs} chunk")
        if len({type(chunk) for chunk in chunks}) <= 1 and all(_whole_kind(chunk) for chunk in chunks):
            return _pack_whole(header, chunks, zstd_level)
    # The smallest version that holds what is written: 2.0 unless a chunk's kind came later
    # (2.1: lm, 2.2: memory-int, 2.3: memory-int-coded, 2.4: memory-int-lm, 2.5: stored) or a
    # flag did (2.5: model-free), so older readers still read the rest
    types = {kind.chunk_type: kind.minor for kind in kinds.KINDS}
    version = (VERSION[0], max([VERSION[1], *(types.get(type(chunk), 0) for chunk in chunks),
                                *(MUST_UNDERSTAND_FLAGS[bit][1] for bit in MUST_UNDERSTAND_FLAGS if flags & bit)]))
    header_bytes = _encode_header(header, len(chunks), version, flags)
    context = kinds.WireContext(version, header.vector_dim)
    records, fallback = [], []
    for index, chunk in enumerate(chunks):
        where = f"chunk {index}"
        try:
            kind = kinds.of(chunk)
        except TypeError as exc:
            raise FormatError(f"{where}: {exc}") from None
        check_int(chunk.length, f"{where}: length", 1, MAX_CHUNK_LENGTH)
        try:
            fields = kind.encode_fields(chunk, context)
        except FormatError as exc:  # LimitError included: keep the class, add the place
            raise type(exc)(f"{where}: {exc}") from None
        if kind.in_fallback_frame:
            fallback.append(chunk.data)
            check = chunk_check(chunk.data)
        else:
            check = chunk.check
            check_int(check, f"{where}: check", 0, 0xFFFFFFFF)
        records.append(bytes([kind.code]) + varint(len(fields)) + varint(chunk.length) + CHECK_V2.pack(check) + fields)
    _check_lengths_sum(chunks, header.input_size)
    frame = _compress(b"".join(fallback), zstd_level) if fallback else b""
    prefix = PREFIX.pack(MAGIC, *version, flags, 0, len(header_bytes))
    body = b"".join([prefix, header_bytes, *records, frame])
    size = len(body) + TRAILER.size
    if size > MAX_ARCHIVE_SIZE:
        raise LimitError(f"archive would be {size} bytes, over the limit {MAX_ARCHIVE_SIZE}")
    return body + TRAILER.pack(checksum(body))


def _pack_whole(header: Header, chunks: list, zstd_level: int) -> bytes:
    """A whole-input archive (2.6, flags ``MODEL_FREE | WHOLE_INPUT``; SPEC.md, "Whole-input
    archives"): prefix, a header without ``c`` or ``n`` (``80`` when it holds nothing), one
    kind byte, then the input as it is (stored; an empty input) or in one zstd frame that
    carries zstd's content checksum, and the trailer."""
    kind = kinds.of(chunks[0]) if chunks else kinds.stored.KIND
    context = kinds.WireContext(WHOLE_VERSION, None)
    for index, chunk in enumerate(chunks):
        check_int(chunk.length, f"chunk {index}: length", 1, MAX_INPUT_SIZE)
        kind.encode_fields(chunk, context)  # its bytes are bytes
    _check_lengths_sum(chunks, header.input_size)
    data = b"".join(chunk.data for chunk in chunks)
    payload = _compress(data, zstd_level, content_checksum=True) if kind is kinds.zstd.KIND else data
    flags = MODEL_FREE | WHOLE_INPUT
    header_bytes = _encode_header(header, len(chunks), WHOLE_VERSION, flags)
    body = PREFIX.pack(MAGIC, *WHOLE_VERSION, flags, 0, len(header_bytes)) + header_bytes + bytes([kind.code]) + payload
    if len(body) + TRAILER.size > MAX_ARCHIVE_SIZE:
        raise LimitError(f"archive would be {len(body) + TRAILER.size} bytes, over the limit {MAX_ARCHIVE_SIZE}")
    return body + TRAILER.pack(checksum(body))


def _whole_kind(chunk) -> bool:
    """Whether ``chunk`` is of a kind a whole-input archive holds (stored or zstd)."""
    return isinstance(chunk, (kinds.stored.StoredChunk, kinds.zstd.FallbackChunk))


def _needs_model(chunk) -> bool:
    try:
        return kinds.of(chunk).needs_model
    except TypeError:
        return False  # not a chunk at all: pack's loop says so, naming it


def _merge_fallback(chunks: Sequence) -> list:
    """Consecutive chunks of a kind that holds plain bytes (zstd, stored) as one chunk, each
    at most ``MAX_CHUNK_LENGTH`` bytes: one record instead of one per chunk."""
    merged = []
    for chunk in chunks:
        previous = merged[-1] if merged else None
        if (
            previous is not None
            and type(previous) is type(chunk)
            and kinds.of(chunk) in (kinds.zstd.KIND, kinds.stored.KIND)
            and isinstance(chunk.data, bytes)
            and isinstance(previous.data, bytes)
            and previous.length + chunk.length <= MAX_CHUNK_LENGTH
        ):
            merged[-1] = type(chunk)(previous.data + chunk.data)
        else:
            merged.append(chunk)
    return merged


def _encode_header(header: Header, chunk_count: int, version: tuple[int, int], flags: int) -> bytes:
    """The header as canonical msgpack (keys sorted), checked by the reader's own rules."""
    values = {**vars(header), "chunk_count": chunk_count}
    absent = _absent_fields(flags)
    fields = {
        key: values[name]
        for name, key, required in _HEADER_KEYS[VERSION[0]]
        if name not in absent and (required or values[name])  # optional maps are left out when empty
    }
    _decode_header(fields, version, flags)
    canonical = {
        key: dict(sorted(value.items())) if isinstance(value, dict) else value
        for key, value in sorted(fields.items())
    }
    encoded = msgpack.packb(canonical, use_bin_type=True)
    if len(encoded) > MAX_HEADER_SIZE:
        raise LimitError(f"header: {len(encoded)} bytes of msgpack, over the limit {MAX_HEADER_SIZE}")
    return encoded


def _compress(data: bytes, level: int, *, content_checksum: bool = False) -> bytes:
    """One zstd frame that declares its content size, without a dictionary. The fallback
    frame carries no content checksum (the chunks' xxh32 checks cover its content); a
    whole-input frame does, as the only check of the bytes it restores."""
    compressor = zstandard.ZstdCompressor(
        level=level, write_content_size=True, write_checksum=content_checksum, write_dict_id=False
    )
    return compressor.compress(data)


# --------------------------------------------------------------------------- reading


def unpack(data) -> Archive:
    """Parse and fully check an archive held in memory (any bytes-like object).

    Fallback chunks come back decompressed, their length and check verified. Other chunks
    come back as stored: only the model can check them (the codec compares their restored
    bytes with ``length`` and ``check``).
    """
    parsed = _parse(data)
    for index, chunk in enumerate(parsed.chunks):
        if isinstance(chunk, _OpaqueChunk):
            raise UnsupportedVersionError(
                f"chunk {index} (record at offset {chunk.offset}): {chunk.kind_name} is from format "
                f"{parsed.version[0]}.{parsed.version[1]}; this reader knows the kinds of format "
                f"{parsed.version[0]}.{READS[parsed.version[0]]} (a newer llmzip can extract it)"
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
    counts = {kind.name: 0 for kind in kinds.KINDS if kind.minor == 0}  # later kinds: when present
    input_bytes, stored = dict(counts), dict(counts)
    margins, standalone = [], []
    for chunk in parsed.chunks:
        kind = None if isinstance(chunk, _OpaqueChunk) else kinds.of(chunk)
        name = chunk.kind_name if kind is None else kind.name
        counts[name] = counts.get(name, 0) + 1
        input_bytes[name] = input_bytes.get(name, 0) + chunk.length
        if kind is not None:
            row = kind.describe(chunk)  # what info says of one chunk, asked once
            stored[name] = stored.get(name, 0) + row["stored_bytes"]
            if row["margin"] is not None:
                margins.append(row["margin"])
            if row["standalone"]:
                standalone.append(chunk.length)
    stored[kinds.zstd.KIND.name] += parsed.fallback_bytes
    return ArchiveInfo(
        version=parsed.version,
        header=parsed.header,
        archive_size=parsed.archive_size,
        chunk_counts=counts,
        input_bytes=input_bytes,
        stored_bytes=stored,
        min_margin=min(margins, default=None),
        standalone_chunks=len(standalone),
        standalone_bytes=sum(standalone),
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


@dataclass(frozen=True)
class _Record:
    """A chunk record's framing, before its kind-specific fields are decoded."""

    index: int
    offset: int
    code: int
    length: int
    check: int
    fields: memoryview

    @property
    def where(self) -> str:
        return f"chunk {self.index} (record at offset {self.offset})"


def _parse(data) -> _Parsed:
    """Every container-level check, in the order of SPEC.md's "Reading, step by step"."""
    view = memoryview(data).cast("B")
    version, flags, header_end = _check_prefix(view)
    body_end = view.nbytes - TRAILER.size
    (stored,) = TRAILER.unpack_from(view, body_end)
    computed = checksum(view[:body_end])
    if stored != computed:
        raise ChecksumError(
            f"trailer checksum (offset {body_end}) is {stored:016x}, but the bytes before it "
            f"hash to {computed:016x}: the archive is corrupted or truncated"
        )
    header, chunk_count = _decode_header(_unpack_msgpack(view[PREFIX.size : header_end]), version, flags)
    if flags & WHOLE_INPUT:
        return _parse_whole(view, version, header, header_end, body_end)
    records, frame_offset = _read_records(view, header_end, body_end, chunk_count, version)
    _check_lengths_sum(records, header.input_size)
    if header.model_free:
        for record in records:
            kind = kinds.by_code(record.code)
            if kind is not None and kind.needs_model:
                raise FormatError(f"{record.where}: a {kind.name} record needs a model, but the archive "
                                  f"records none (must-understand flag 0x{MODEL_FREE:04x})")
    in_frame = {kind.code for kind in kinds.KINDS if kind.in_fallback_frame}
    fallback_size = sum(record.length for record in records if record.code in in_frame)
    fallback = _decompress(view[frame_offset:body_end], frame_offset, fallback_size)
    chunks = _decode_chunks(records, fallback, header.vector_dim, version)
    if header.model_free and not any(isinstance(chunk, _OpaqueChunk) for chunk in chunks):
        # every chunk's bytes are here, each checked: the whole input's xxh64 follows
        header = dataclasses.replace(header, input_xxh64=checksum(b"".join(chunk.data for chunk in chunks)))
    return _Parsed(version, header, chunks, view.nbytes, body_end - frame_offset)


def _parse_whole(view: memoryview, version: tuple[int, int], header: Header, offset: int, end: int) -> _Parsed:
    """A whole-input archive's body (flag WHOLE_INPUT): one kind byte, then the input as it
    is (kind stored) or in one zstd frame with a content checksum (kind zstd)."""
    if offset >= end:
        raise FormatError(f"truncated: no kind byte after the header (offset {offset}) of a whole-input archive")
    code, payload = view[offset], view[offset + 1 : end]
    where = f"whole input (offset {offset + 1})"
    if code == kinds.stored.KIND.code:
        check_int(payload.nbytes, f"{where}: stored bytes", 0, MAX_INPUT_SIZE)
        data, frame_size = bytes(payload), 0
        chunks = [kinds.stored.StoredChunk(data)] if data else []
    elif code == kinds.zstd.KIND.code:
        params = _frame_parameters(payload, where, expected=None)
        data, frame_size = _decompress_frame(payload, where, params.content_size), payload.nbytes
        chunks = [kinds.zstd.FallbackChunk(data)]
    else:
        raise FormatError(f"{where}: kind {code} cannot hold a whole input (only stored, 7, and zstd, 2)")
    header = dataclasses.replace(header, input_size=len(data), input_xxh64=checksum(data))
    return _Parsed(version, header, chunks, view.nbytes, frame_size)


def _check_prefix(view: memoryview) -> tuple[tuple[int, int], int, int]:
    """Size, magic, version, flags and header size; returns (version, must-understand
    flags, header end).

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
    if major not in READS:
        known = " and ".join(f"{m}.x" for m in sorted(READS))
        raise UnsupportedVersionError(f"format version {major}.{minor} (offset 8) is not supported; this reader reads {known}")
    known = sum(bit for bit, since in MUST_UNDERSTAND_FLAGS.items() if (major, minor) >= since and major == since[0])
    unknown_flags = must_understand & ~known
    if unknown_flags:
        raise UnsupportedVersionError(f"unknown must-understand flags 0x{unknown_flags:04x} (offset 10)")
    if header_size > MAX_HEADER_SIZE:
        raise LimitError(f"header size {header_size} (offset 14) is over the limit {MAX_HEADER_SIZE}")
    if PREFIX.size + header_size > size - TRAILER.size:
        raise FormatError(f"truncated: header size {header_size} (offset 14) runs past the end of the file")
    return (major, minor), must_understand, PREFIX.size + header_size


def _read_records(view: memoryview, offset: int, end: int, count: int, version: tuple[int, int]):
    """The framing of ``count`` records from ``offset``, every size bounded before use.

    Returns the records and the offset just after the last one, where the frame starts.
    """
    smallest = MIN_RECORD_SIZE[version[0]]
    if count > (end - offset) // smallest:
        raise FormatError(
            f"header chunk_count is {count}, but the {end - offset} bytes from offset "
            f"{offset} to the trailer hold at most {(end - offset) // smallest} records"
        )
    records = []
    for index in range(count):
        if offset + smallest > end:
            raise FormatError(f"truncated: chunk {index} (record at offset {offset}) runs into the trailer")
        start_of_record = offset
        where = f"chunk {index} (record at offset {offset})"
        if version[0] == 1:
            code, fields_size, length, check = RECORD_V1.unpack_from(view, offset)
            start = offset + RECORD_V1.size
        else:
            code = view[offset]
            fields_size, at = read_varint(view[:end], offset + 1, f"{where}: fields size", limit=MAX_FIELDS_SIZE + 1)
            length, at = read_varint(view[:end], at, f"{where}: length", limit=MAX_CHUNK_LENGTH + 1)
            if at + CHECK_V2.size > end:
                raise FormatError(f"truncated: {where} runs into the trailer")
            (check,) = CHECK_V2.unpack_from(view, at)
            start = at + CHECK_V2.size
        record = _Record(index, start_of_record, code, length, check, view[start : start + fields_size])
        if fields_size > end - start:
            raise FormatError(f"{record.where}: its {fields_size} bytes of fields run into the trailer")
        check_int(length, f"{record.where}: length", 1, MAX_CHUNK_LENGTH)
        if kinds.by_code(code) is None and version[1] <= READS[version[0]]:
            raise FormatError(f"{record.where}: unknown chunk kind {code} in a format {version[0]}.{version[1]} archive")
        records.append(record)
        offset = start + fields_size
    return records, offset


def _decode_chunks(records: list, fallback: bytes, vector_dim: int, version: tuple[int, int]) -> list:
    """Each record's kind-specific fields, decoded by its kind; kinds that live in the
    fallback frame take consecutive slices of ``fallback``."""
    position = 0

    def take_fallback(length: int) -> bytes:
        nonlocal position
        position += length
        return fallback[position - length : position]

    context = kinds.WireContext(version, vector_dim, take_fallback)
    chunks = []
    for record in records:
        kind = kinds.by_code(record.code)
        if kind is None:
            chunks.append(_OpaqueChunk(record.code, record.length, record.offset))
        else:
            chunks.append(kind.decode_fields(record.fields, record.length, record.check, context, record.where))
    return chunks


def _decompress(frame: memoryview, offset: int, expected: int) -> bytes:
    """Decompress the fallback frame after checking its header against the ``expected``
    size the zstd records add up to, so no frame makes the reader allocate more."""
    where = f"fallback frame at offset {offset}"
    if not expected:
        if frame.nbytes:
            raise FormatError(f"{where}: {frame.nbytes} bytes present, but no chunk is of kind zstd")
        return b""
    _frame_parameters(frame, where, expected)
    return _decompress_frame(frame, where, expected)


def _frame_parameters(frame: memoryview, where: str, expected: int | None):
    """A zstd frame's header, checked: the zstd magic (no skippable frame), parseable, its
    declared content size (``expected`` bytes: the fallback frame; None: a whole input's,
    1 byte to the input limit, with a content checksum), no dictionary, a window within the
    limit."""
    if bytes(frame[: len(ZSTD_FRAME_MAGIC)]) != ZSTD_FRAME_MAGIC:
        raise FormatError(f"{where}: does not start with the zstd magic number {ZSTD_FRAME_MAGIC.hex()}")
    try:
        params = zstandard.get_frame_parameters(frame)
    except zstandard.ZstdError as exc:
        raise FormatError(f"{where}: bad zstd frame header ({exc})") from None
    unknown = params.content_size == zstandard.CONTENTSIZE_UNKNOWN
    if expected is not None and params.content_size != expected:
        declared = "no content size" if unknown else f"{params.content_size} bytes"
        raise FormatError(f"{where}: declares {declared}, but the zstd chunks hold {expected} bytes")
    if expected is None:
        if unknown:
            raise FormatError(f"{where}: the zstd frame declares no content size")
        check_int(params.content_size, f"{where}: declared content size", 1, MAX_INPUT_SIZE)
        if not params.has_checksum:
            raise FormatError(f"{where}: the zstd frame carries no content checksum; a whole-input frame must")
    if params.dict_id:
        raise FormatError(f"{where}: needs zstd dictionary {params.dict_id}; the format uses none")
    if params.window_size > MAX_WINDOW_SIZE:
        raise LimitError(f"{where}: window size {params.window_size} is over the limit {MAX_WINDOW_SIZE}")
    return params


def _decompress_frame(frame: memoryview, where: str, expected: int) -> bytes:
    """Decompress one checked frame whose declared content size is ``expected``: never more
    is produced, nothing may follow it, and a content checksum it carries must match."""
    decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_SIZE)
    try:
        data = decompressor.decompress(frame, max_output_size=expected, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        # libzstd checks a frame's content checksum itself ("Restored data doesn't match checksum")
        error = ChecksumError if "checksum" in str(exc) else FormatError
        raise error(f"{where}: {exc}") from None
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


def _decode_header(fields, version: tuple[int, int], flags: int = 0) -> tuple[Header, int]:
    """Check the header's decoded msgpack map; return it as a Header plus chunk_count.

    Unknown keys are allowed (a later minor version may add optional ones) but are
    bounded like the rest: values are scalars, or maps or arrays of scalars. With flag
    ``MODEL_FREE`` the model's fields and the input's xxh64 MUST be absent.
    """
    if not isinstance(fields, dict):
        raise FormatError(f"header: expected a msgpack map, got {type_name(fields)}")
    _check_value(fields, "header", 1, allow_bin=version[0] >= 2)
    keys = {name: key for name, key, _ in _HEADER_KEYS[version[0]]}
    model_free = bool(flags & MODEL_FREE)
    absent = _absent_fields(flags)
    if flags & WHOLE_INPUT and not model_free:
        raise FormatError(f"must-understand flag 0x{WHOLE_INPUT:04x} (whole input) without 0x{MODEL_FREE:04x} "
                          f"(model-free) (offset 10)")
    missing = [key for name, key, required in _HEADER_KEYS[version[0]]
               if required and name not in absent and key not in fields]
    if missing:
        raise FormatError(f"header: missing field(s) {', '.join(missing)}")
    present = [keys[name] for name in absent if keys[name] in fields]
    if present:
        what = "whole-input" if flags & WHOLE_INPUT else "model-free"
        raise FormatError(f"header: field(s) {', '.join(present)} in a {what} archive (must-understand "
                          f"flags 0x{flags:04x}), which records none")

    def where(name: str) -> str:
        return f"header[{keys[name]!r}]"

    def scalar_map(name: str, types: tuple) -> dict:
        value = fields.get(keys[name], {})
        if not isinstance(value, dict):
            raise FormatError(f"{where(name)}: expected a map, got {type_name(value)}")
        for key, item in value.items():
            if not isinstance(item, types):
                raise FormatError(f"{where(name)}[{reprlib.repr(key)}]: {type_name(item)} is not allowed here")
        return value

    model_types = (str, int, bytes, type(None)) if version[0] >= 2 else (str, int, type(None))
    header = Header(
        model=scalar_map("model", model_types),
        settings=scalar_map("settings", (str, int, float, type(None))),
        vector_dim=None if model_free else check_int(fields[keys["vector_dim"]], where("vector_dim"), 1, MAX_VECTOR_DIM),
        # a whole-input archive's size is its payload's: _parse_whole fills it in
        input_size=0 if "input_size" in absent else check_int(fields[keys["input_size"]], where("input_size"), 0,
                                                              MAX_INPUT_SIZE),
        input_xxh64=None if model_free else check_int(fields[keys["input_xxh64"]], where("input_xxh64"), 0, _U64_MAX),
        metadata=scalar_map("metadata", (str,)),
    )
    if "chunk_count" in absent:
        return header, 0
    return header, check_int(fields[keys["chunk_count"]], where("chunk_count"), 0, MAX_CHUNKS)


def _check_value(value, where: str, depth: int, *, allow_bin: bool) -> None:
    """Bound one header value: type, UTF-8 size, entry count and nesting depth. bin is
    allowed from format 2 on (fingerprints as raw bytes)."""
    if isinstance(value, bytes) and allow_bin:
        if len(value) > MAX_STRING_SIZE:
            raise LimitError(f"{where}: bin over the limit of {MAX_STRING_SIZE} bytes")
    elif isinstance(value, str):
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
            _check_value(item, f"{where}[{reprlib.repr(key)}]", depth + 1, allow_bin=allow_bin)
    elif value is not None:
        raise FormatError(f"{where}: unsupported type {type_name(value)}")


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


def _check_lengths_sum(chunks: Sequence, input_size: int) -> None:
    total = sum(chunk.length for chunk in chunks)
    if total != input_size:
        raise FormatError(f"chunk lengths add up to {total} bytes, but header['input_size'] is {input_size}")
