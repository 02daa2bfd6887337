"""What every chunk kind provides (see :mod:`llmzip.kinds`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from llmzip import wire
from llmzip.chunking import detokenize, text_bytes
from llmzip.errors import FormatError

# Memory and lm chunks are decoded together in groups of this many, consecutive in archive
# order, where an archive records none (settings "g"; CODEC.md, "Decode groups"): the
# writer's default too. 256 rows keep a step compute-bound on a CPU core: 19.7x the
# tokens/s of batch 1 (BENCHMARKS.md, "Extract throughput"), and the prompt pass's logits
# take 2 MB a row with Gemma's 262k vocabulary. The most an archive may ask for is
# wire.MAX_DECODE_GROUP.
DEFAULT_DECODE_GROUP = 256

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
    # Whether the writer stores chunks of this kind. Read-only kinds (False) live in
    # llmzip/kinds/legacy/: every archive ever written stays readable, but nothing writes
    # them any more (their writers are in the fixture tooling, fixtures/legacy_writers.py).
    written: ClassVar[bool]

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

    def tokens(self, chunk) -> int | None:
        """The tokens restoring this chunk decodes (its record's n_tokens), or None for
        kinds that decode none."""
        return None

    def work(self, chunk) -> int:
        """Units of restoring work (decoded tokens) this chunk costs, for progress bars."""
        return self.tokens(chunk) or 0

    def corrections_count(self, chunk) -> int:
        """Positions the decode of this chunk takes a stored token at instead of its
        greedy choice (kinds memory-int-coded, memory-int-lm); 0 for every other kind."""
        return 0

    def describe(self, chunk) -> dict[str, Any]:
        """What ``llmzip info``/``verify -v`` may say about one chunk, without a model:
        ``kind`` (name), ``length`` (bytes it restores), ``stored_bytes`` (its payload,
        :meth:`stored_bytes`), ``tokens`` (:meth:`tokens`, None for kinds that decode
        none), ``margin`` (:meth:`margin`, None for kinds without), ``corrections``
        (:meth:`corrections_count`), ``standalone`` (a memory vector that regenerates its
        chunk alone: a memory kind's chunk without corrections)."""
        return {"kind": self.name, "length": chunk.length, "stored_bytes": self.stored_bytes(chunk),
                "tokens": self.tokens(chunk), "margin": self.margin(chunk),
                "corrections": self.corrections_count(chunk), "standalone": False}

    def export_row(self, chunk, archive) -> dict[str, Any] | None:
        """What ``llmzip export`` writes for this chunk, or None if it exports nothing."""
        return None

    # ---------------------------------------------------------------- model half

    def check_before_model(self, items: list[tuple[int, Any]], header) -> None:
        """Refuse, before any model loads, records that are corrupt in ways only this
        kind can see (the container has checked the framing)."""

    def restore(self, items: list[tuple[int, Any]], loaded, archive,
                on_done: Callable[[int], None] | None = None, runner=None) -> Iterator[Restored]:
        """Restore ``items`` ((index, chunk) of this kind, in archive order) of ``archive``
        with ``loaded`` (a :class:`llmzip.model.LoadedModel`, or None when ``needs_model``
        is False). ``on_done(n)`` reports progress: n more tokens decoded. ``runner``: where
        the model's work runs (:func:`map_calls`)."""
        raise NotImplementedError


def check_token_counts(items) -> None:
    """Refuse a chunk that asks for more tokens than it has bytes: every token a writer
    stores decodes to at least one byte, so such a record is corrupt, and decoding it
    anyway would cost up to 65,536 model steps (kinds that decode tokens call this)."""
    for index, chunk in items:
        if chunk.n_tokens > chunk.length:
            raise FormatError(f"chunk {index}: n_tokens {chunk.n_tokens} exceeds its length {chunk.length} B")


def decode_group(archive) -> int:
    """The archive's decode group (settings ``g``, format 2; CODEC.md, "Decode groups"),
    bounded to 1..``wire.MAX_DECODE_GROUP``, or :data:`DEFAULT_DECODE_GROUP` where it
    records none."""
    group = archive.header.settings.get(wire.SETTINGS_KEYS["decode_group"]) if archive.version[0] >= 2 else None
    if group is None:
        return DEFAULT_DECODE_GROUP
    return wire.check_int(group, "header settings: decode group", 1, wire.MAX_DECODE_GROUP)


def map_calls(loaded, function, calls: list[tuple], units: list[int], on_done=None, runner=None) -> Iterator:
    """``function(loaded, *call, on_done=...)`` for each call, in call order: in this
    process, or on ``runner``'s workers (:class:`llmzip.distributed.WorkerPool`), each with
    its own copy of the model, ``on_done(units[i])`` as call ``i`` finishes.

    Kinds cut their model work into calls here (a decode group; a part of the lm coding),
    at the same places with or without a runner, and a call is a pure function of the
    model and its arguments: where it runs changes no bit as long as the workers run the
    driver's kernels and thread count. ``function`` must pickle (a module-level function,
    or a kind's method)."""
    if runner is None:
        return (function(loaded, *call, on_done=on_done) for call in calls)
    return runner.map(function, calls, units, on_done)


def restored_text(loaded, token_ids) -> bytes:
    """The bytes ``token_ids`` decode to with ``loaded``'s tokenizer (kinds that decode tokens)."""
    return text_bytes(detokenize(loaded.tokenizer, token_ids))
