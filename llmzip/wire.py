"""The wire: what every part of an archive is written with, and every hard limit, once.

A leaf module: it imports nothing of llmzip but :mod:`llmzip.errors`, and no torch, so the
container, every chunk kind's wire half and the CLI's option bounds read their numbers
from here. ``format/SPEC.md`` defines the bytes; the constants below are its "Limits"
table (and the few bounds of ``format/CODEC.md`` that a reader checks before any model
loads), named once.
"""

from __future__ import annotations

import xxhash

from llmzip.errors import FormatError, LimitError

VERSION = (2, 0)  # (major, minor) the writer writes; a chunk of a later kind raises the minor

# Hard limits (SPEC.md, "Limits"). A reader rejects anything beyond them before allocating.
MAX_ARCHIVE_SIZE = 1 << 32
MAX_HEADER_SIZE = 1 << 20
MAX_INPUT_SIZE = 1 << 30  # n, the whole output
MAX_CHUNKS = 1 << 24  # c
MAX_CHUNK_LENGTH = 1 << 20
MAX_TOKENS_PER_CHUNK = 1 << 16  # n_tokens
MAX_VECTOR_DIM = 1 << 15  # d
MAX_ENTRIES = 256  # per header map or array
MAX_KEY_SIZE = 256  # bytes of UTF-8
MAX_STRING_SIZE = 1 << 16  # bytes of UTF-8 (and of bin, in format 2)
MAX_DEPTH = 2  # the header map is level 1; maps and arrays inside it are level 2
MAX_WINDOW_SIZE = 1 << 27  # the fallback frame's zstd Window_Size
MAX_FIELDS_SIZE = 1 << 24  # bytes of one record's kind-specific fields
MAX_CORRECTIONS = 64  # corrected positions one memory-int-coded or memory-int-lm record may hold (and n_tokens - 1)
# Memory and lm chunks are decoded in groups of at most this many (settings "g"; CODEC.md,
# "Decode groups"): what an archive may ask for, which bounds the prompt pass's memory.
MAX_DECODE_GROUP = 4096

VECTOR_BITS = tuple(range(2, 17))  # bits per memory-int coefficient (kind 4)
CODED_BITS = tuple(range(2, 9))  # bits per range-coded coefficient (kinds 5 and 6): up to 255 values per model

# The prompt template (CODEC.md, "Kind memory"): the model's BOS embedding, then the memory
# vector. Format 1 headers record it in settings "template"; format 2 has one per kind code.
TEMPLATE = "bos+mem"

# Format 2 settings keys (header "s"): name -> key (format/CODEC.md, "Settings"), so that
# `info` can spell them out.
SETTINGS_KEYS = {"chunk_tokens": "c", "verify_margin": "m", "decode_group": "g",
                 "lm_delta": "ld", "lm_levels": "lr", "lm_band_levels": "lb", "lm_tolerance": "lt",
                 "memory_offset": "mo"}


def checksum(data) -> int:
    """xxh64 with seed 0: the checksum of whole inputs and of the archive (the trailer)."""
    return xxhash.xxh64_intdigest(data)


def chunk_check(data, version: tuple[int, int] = VERSION) -> int:
    """A chunk's checksum in a format ``version`` record: xxh64 in 1.x, xxh32 in 2.x (four
    bytes a chunk; the whole-input xxh64 and the trailer still cover every byte)."""
    return xxhash.xxh64_intdigest(data) if version[0] == 1 else xxhash.xxh32_intdigest(data)


def varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, low bits first, high bit set on all but the last."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_varint(view, offset: int, where: str, *, limit: int = 1 << 32) -> tuple[int, int]:
    """Decode one LEB128 varint at ``offset``: (value, offset after it). At most 5 bytes,
    in its shortest form (so every value has exactly one encoding), and below ``limit``."""
    value = 0
    for position in range(5):
        if offset + position >= len(view):
            raise FormatError(f"{where}: truncated varint")
        byte = view[offset + position]
        value |= (byte & 0x7F) << (7 * position)
        if not byte & 0x80:
            if byte == 0 and position:
                raise FormatError(f"{where}: varint is not in its shortest form")
            if value >= limit:
                raise LimitError(f"{where}: {value} is over the limit {limit - 1}")
            return value, offset + position + 1
    raise FormatError(f"{where}: varint longer than 5 bytes")


def check_int(value, where: str, low: int, high: int) -> int:
    """``value`` if it is an int (not a bool) in ``low``..``high``; else a ``FormatError``
    (``LimitError`` above ``high``) naming ``where``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise FormatError(f"{where}: expected an integer, got {type_name(value)}")
    if value < low:
        raise FormatError(f"{where}: {value} is below the minimum {low}")
    if value > high:
        raise LimitError(f"{where}: {value} is over the limit {high}")
    return value


def type_name(value) -> str:
    """A value's type as messages name it (msgpack's ``nil`` for None)."""
    return "nil" if value is None else type(value).__name__
