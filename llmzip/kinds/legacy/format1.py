"""Format 1.0 (llmzip 0.1.0, read, no longer written): what a ``memory`` record and the
header's settings held there (format/SPEC.md, "Format 1.0").

The container frames format 1 records itself (fixed-width fields, xxh64 chunk checks);
this module is the kind-level part: a memory record's fields, and the prompt template
format 1 headers record (format 2 defines one template per kind code).
"""

from __future__ import annotations

import struct

from llmzip.errors import FormatError
from llmzip.wire import TEMPLATE

MEMORY_FIELDS = struct.Struct("<Id")  # n_tokens u32, min_margin f64; the vector follows


def read_memory_fields(fields, vector_size: int, where: str) -> tuple[int, float, int]:
    """(n_tokens, min_margin, offset of the vector) of a format 1 memory record's fields,
    which must hold exactly one vector of ``vector_size`` bytes after them."""
    head = MEMORY_FIELDS.size
    if fields.nbytes != head + vector_size:
        raise FormatError(f"{where}: a memory record has {head + vector_size} bytes of fields, not {fields.nbytes}")
    n_tokens, margin = MEMORY_FIELDS.unpack_from(fields)
    return n_tokens, margin, head


def check_template(settings: dict) -> None:
    """Refuse a format 1 archive whose settings record another prompt template."""
    template = settings.get("template")
    if template != TEMPLATE:
        raise FormatError(f"archive uses prompt template {template!r}; this llmzip decodes {TEMPLATE!r}")
