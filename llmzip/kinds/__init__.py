"""Chunk kinds: one module per way of storing a chunk, and the registry that names them.

A kind is one module with two halves:

* a **wire half** (torch-free): its record code and name, the dataclass a chunk of the kind
  is held in, how its kind-specific record fields are encoded and decoded with every bound
  checked, and what ``llmzip info`` reports about it;
* a **model half** (imports torch lazily, only when called): how its chunks are restored
  from an archive with the loaded model.

A kind module imports the wire (:mod:`llmzip.wire`), the errors and the other torch-free
leaves (:mod:`llmzip.corrections`, :mod:`llmzip.chunking`, :mod:`llmzip.identity`) at its
top, and :mod:`llmzip.decode` (torch) only inside its model half; never the container,
the codec or the training forms (:mod:`llmzip.forms`), so nothing imports in a circle
(tests/test_imports.py). Each kind says whether the writer uses it (``written``); the
read-only ones live in :mod:`llmzip.kinds.legacy`.

The container and the codec never ask what kind a chunk is with ``isinstance``: they look
the kind up here, by record code (reading), by chunk type (writing) or by name (reports).
Adding a kind is one module plus one line in :data:`KINDS`; ``tests/test_kinds.py`` shows
it with a kind defined inside the test suite.
"""

from __future__ import annotations

from llmzip.kinds import lm, memory, memory_int, memory_int_lm, stored, zstd
from llmzip.kinds.base import Kind, WireContext
from llmzip.kinds.legacy import memory_int_coded

KINDS: list[Kind] = [memory.KIND, zstd.KIND, lm.KIND, memory_int.KIND, memory_int_coded.KIND, memory_int_lm.KIND,
                    stored.KIND]


def by_code(code: int) -> Kind | None:
    """The kind whose records carry ``code``, or None for a kind this llmzip does not know."""
    return next((kind for kind in KINDS if kind.code == code), None)


def by_name(name: str) -> Kind:
    for kind in KINDS:
        if kind.name == name:
            return kind
    raise KeyError(name)


def of(chunk) -> Kind:
    """The kind of a chunk object (by its dataclass)."""
    for kind in KINDS:
        if type(chunk) is kind.chunk_type:
            return kind
    raise TypeError(f"{type(chunk).__name__} is not a chunk of any registered kind")


__all__ = ["KINDS", "Kind", "WireContext", "by_code", "by_name", "of"]
