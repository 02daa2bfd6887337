"""What every chunk kind provides (see :mod:`llmzip.kinds`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class WireContext:
    """What a kind's wire half may read while encoding or decoding one record."""

    version: tuple[int, int]  # the archive's format version (a kind's layout may differ by major)
    vector_dim: int  # header's vector_dim
    # Kinds whose bytes live in the shared fallback frame take their next ``length`` bytes here.
    take_fallback: Callable[[int], bytes] | None = None


@dataclass(frozen=True)
class Restored:
    """One chunk restored by a kind's model half."""

    index: int  # chunk index in the archive
    data: bytes  # the bytes the kind restored (checked by the codec against the record)
    margin: float | None = None  # the decode's smallest logit gap, for kinds that decode


class Kind:
    """One way of storing a chunk. Subclasses set the class attributes and override the
    methods; one instance of each is registered in :data:`llmzip.kinds.KINDS`."""

    name: ClassVar[str]  # as reported by info, verify and the API ("memory", "zstd", ...)
    code: ClassVar[int]  # the record's kind byte (format/SPEC.md, "Chunk kinds")
    chunk_type: ClassVar[type]  # the frozen dataclass a chunk of this kind is held in
    in_fallback_frame: ClassVar[bool] = False  # its bytes live in the archive's zstd frame
    needs_model: ClassVar[bool] = False  # restoring it needs the archive's model
    minor: ClassVar[int] = 0  # the format 2 minor version that defines it (the writer's minor is the largest used)

    # ---------------------------------------------------------------- wire half (no torch)

    def encode_fields(self, chunk, ctx: WireContext) -> bytes:
        """The record's kind-specific fields, every value checked as the reader checks it."""
        raise NotImplementedError

    def decode_fields(self, fields: memoryview, length: int, check: int, ctx: WireContext, where: str):
        """A chunk object from its record's fields, or a ``FormatError`` naming ``where``."""
        raise NotImplementedError

    def stored_bytes(self, chunk) -> int:
        """Bytes of this chunk's own payload in the archive (its vector, its coded bytes);
        0 for kinds whose bytes live in the shared fallback frame."""
        return 0

    def margin(self, chunk) -> float | None:
        """The smallest logit gap recorded at compress time, for kinds that decode."""
        return None

    def work(self, chunk) -> int:
        """Units of restoring work (decoded tokens) this chunk costs, for progress bars."""
        return 0

    def export_row(self, chunk, archive) -> dict[str, Any] | None:
        """What ``llmzip export`` writes for this chunk, or None if it exports nothing."""
        return None

    # ---------------------------------------------------------------- model half

    def check_before_model(self, items: list[tuple[int, Any]], header) -> None:
        """Refuse, before any model loads, records that are corrupt in ways only this
        kind can see (the container has checked the framing)."""

    def restore(self, items: list[tuple[int, Any]], loaded, archive,
                on_done: Callable[[int], None] | None = None) -> Iterator[Restored]:
        """Restore ``items`` ((index, chunk) of this kind, in archive order) of ``archive``
        with ``loaded`` (a :class:`llmzip.model.LoadedModel`, or None when ``needs_model``
        is False). ``on_done(n)`` reports progress: n more tokens decoded."""
        raise NotImplementedError


def check_token_counts(items) -> None:
    """Refuse a chunk that asks for more tokens than it has bytes: every token a writer
    stores decodes to at least one byte, so such a record is corrupt, and decoding it
    anyway would cost up to 65,536 model steps (kinds that decode tokens call this)."""
    from llmzip.errors import FormatError

    for index, chunk in items:
        if chunk.n_tokens > chunk.length:
            raise FormatError(f"chunk {index}: n_tokens {chunk.n_tokens} exceeds its length {chunk.length} B")


def decode_group(archive, default: int, limit: int) -> int:
    """The archive's decode group (settings ``g``, format 2; CODEC.md, "Decode groups"),
    bounded to 1..``limit``, or ``default`` where it records none."""
    from llmzip import container

    group = archive.header.settings.get(container.SETTINGS_KEYS["decode_group"]) if archive.version[0] >= 2 else None
    if group is None:
        return default
    return container.check_int(group, "header settings: decode group", 1, limit)
