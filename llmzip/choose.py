"""Choosing each chunk's kind, every choice exact for the computation extract will run.

After training, a chunk may have a vector; every eligible chunk may also be LM-coded, and
any chunk can be stored with zstd. :class:`KindChooser` keeps, for each chunk, the form the
codec asks for (``memory``: its vector where it has one; ``lm``: its LM code; ``auto``: the
smallest), and stores nothing extract would not restore exactly (docs/DESIGN.md,
invariant 1):

1. every stored vector is decoded exactly as extract decodes it (its kind's ``decode`` in
   the archive's decode groups) and kept only if that gives its tokens with the verify
   margin (:meth:`KindChooser.verify_vectors`);
2. chunks offered to kind ``lm`` are coded, and each kept where it is smaller than the
   chunk's current form (:meth:`KindChooser.lm_code`). An lm code needs no decode here:
   the writer keeps every decision on a token's path the tolerance away from its grid
   line under the teacher-forced logits, and extract's logits differ from those by far
   less (docs/DESIGN.md, invariants 1 and 8; BENCHMARKS.md, "LM coding: drift").

A vector that fails its check falls back to zstd. Dropping a vector regroups the vectors
after it, so the check repeats until nothing fails (each round stores one vector fewer,
so it ends).

Then the codec compares whole archives (docs/DESIGN.md, invariant 10): its choices, the
whole input stored or in one zstd frame (:func:`whole_input`), each with its zstd chunks
also tried as stored ones, and keeps the smallest (:func:`smallest_archive`). Input that
is mostly not text (:func:`looks_binary`) goes straight to those whole-input forms.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass

from llmzip import container, kinds
from llmzip.kinds.stored import StoredChunk
from llmzip.kinds.zstd import FallbackChunk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KindChooser:
    """The settings a choice depends on; ``loaded`` is the model extract will load."""

    loaded: object  # llmzip.model.LoadedModel
    vector_kind: kinds.Kind  # the kind trained vectors are stored as
    codec: str  # "memory", "lm" or "auto" (llmzip.codec.LmzCompressor)
    decode_group: int
    verify_margin: float
    zstd_level: int
    runner: object = None  # where the verification decodes and the lm coding run (kinds.base.map_calls)

    def verify_vectors(self, stored: list, chunks, on_verify=None) -> list:
        """Keep a vector only if extract's batched decode gives its tokens with at least
        the verify margin; record the margin measured here."""
        memory = self.vector_kind
        while True:
            positions = [i for i, chunk in enumerate(stored) if kinds.of(chunk) is memory]
            total, done = sum(stored[i].n_tokens for i in positions), 0

            def advance(tokens: int) -> None:
                nonlocal done
                done += tokens
                on_verify(done, total)

            results = memory.decode(self.loaded, [stored[i] for i in positions], self.decode_group,
                                    on_done=advance if on_verify is not None else None, runner=self.runner)
            failed = False
            for i, result in zip(positions, results):
                if result.token_ids == list(chunks[i].token_ids) and result.min_margin >= self.verify_margin:
                    stored[i] = dataclasses.replace(stored[i], min_margin=result.min_margin)
                else:
                    log.info("llmzip: chunk %d fails extract's batched decode; stored with zstd", i)
                    stored[i], failed = FallbackChunk(chunks[i].data), True
            if not failed:
                return stored

    def lm_code(self, stored: list, chunks, on_code=None) -> list:
        """LM-code the eligible chunks this codec offers to kind lm (``memory``: those
        without a vector; ``lm`` and ``auto``: all) and keep each coding that is smaller
        than the chunk's current kind (a zstd chunk counted as its own zstd frame; the
        caller then compares whole archives). In ``auto`` a vector replaced by lm regroups
        the others, so they are verified again. ``on_code(done, total)``: tokens coded."""
        lm, memory = kinds.lm.KIND, self.vector_kind
        offer = [i for i, chunk in enumerate(chunks) if chunk.eligible and len(chunk.token_ids) <= len(chunk.data)
                 and (self.codec != "memory" or kinds.of(stored[i]) is not memory)]
        if not offer:
            return stored
        token_lists = [chunks[i].token_ids for i in offer]
        total, done = sum(map(len, token_lists)), 0

        def advance(tokens: int) -> None:
            nonlocal done
            done += tokens
            on_code(done, total)

        coded = dict(zip(offer, lm.encode(self.loaded, token_lists, on_done=advance if on_code else None,
                                          runner=self.runner)))

        def take_lm(i: int) -> None:
            stored[i] = kinds.lm.LmChunk(coded[i], len(chunks[i].token_ids), len(chunks[i].data),
                                         container.chunk_check(chunks[i].data))

        replaced_vector = False
        for i in offer:
            if len(coded[i]) < self._own_size(stored[i]):
                replaced_vector |= kinds.of(stored[i]) is memory
                take_lm(i)
        if replaced_vector:
            stored = self.verify_vectors(stored, chunks)
            for i in offer:  # a vector that failed now is a zstd chunk: lm may be smaller
                if kinds.of(stored[i]) is kinds.zstd.KIND and len(coded[i]) < self._own_size(stored[i]):
                    take_lm(i)
        return stored

    def _own_size(self, chunk) -> int:
        """What a chunk costs on its own: a vector's stored bytes, or its own zstd frame."""
        import zstandard

        if kinds.of(chunk) is self.vector_kind:
            return self.vector_kind.stored_bytes(chunk)
        return len(zstandard.ZstdCompressor(level=self.zstd_level).compress(chunk.data))

    def choose(self, stored: list, chunks, pack, on_verify=None, on_code=None) -> tuple[list, bytes]:
        """(the chunks as they will be stored, the archive ``pack(chunks)`` makes of them)
        from ``stored`` (each chunk's vector where training kept one, else a zstd chunk)."""
        stored = self.verify_vectors(stored, chunks, on_verify)
        plain = list(stored)
        stored = self.lm_code(stored, chunks, on_code)
        archive = pack(stored)
        # A chunk's own zstd frame overstates what it costs in the shared frame (repetitive
        # text compresses across chunks), so the archive with those chunks back in the
        # frame is packed too, and the smaller one kept.
        lm = kinds.lm.KIND
        moved = [kinds.of(new) is lm and kinds.of(old) is kinds.zstd.KIND for new, old in zip(stored, plain)]
        if any(moved):
            alternative = [old if back else new for new, old, back in zip(stored, plain, moved)]
            smaller = pack(alternative)
            if len(smaller) < len(archive):
                stored, archive = alternative, smaller
        return stored, archive


# Share of an input's bytes, NULs or not part of valid UTF-8, above which it is binary.
BINARY_SHARE = 0.3


def looks_binary(data: bytes) -> bool:
    """Whether ``data`` is mostly not text: more than :data:`BINARY_SHARE` of its bytes are
    NULs or outside valid UTF-8 sequences. Such input is stored whole (stored or zstd),
    without training or LM coding: its few valid pieces would cost minutes of training
    for vectors zstd beats (an ELF file: 29 s for 1,012 B against zstd's 831)."""
    if not data:
        return False
    text = data.decode("utf-8", "surrogateescape")  # each invalid byte becomes one of U+DC80..U+DCFF
    invalid = len(re.findall("[\udc80-\udcff]", text))
    return invalid + data.count(0) > BINARY_SHARE * len(data)


def whole_input(data: bytes) -> list[list]:
    """The two model-free forms of the whole input: as stored records and as zstd records
    (one frame), each record at most the chunk length limit (none for an empty input)."""
    pieces = [data[i : i + container.MAX_CHUNK_LENGTH] for i in range(0, len(data), container.MAX_CHUNK_LENGTH)]
    return [[StoredChunk(piece) for piece in pieces], [FallbackChunk(piece) for piece in pieces]]


def smallest_archive(candidates: list) -> bytes:
    """The smallest archive of ``candidates`` ((chunks, archive, pack) triples, the first
    of equals), each also tried with its zstd chunks stored instead (``pack(chunks)`` makes
    that archive): bytes zstd does not shrink cost only their record as stored chunks."""
    best = None
    for stored, archive, pack in candidates:
        tries = [archive]
        if any(type(chunk) is FallbackChunk for chunk in stored) and not all(type(c) is FallbackChunk for c in stored):
            tries.append(pack([StoredChunk(chunk.data) if type(chunk) is FallbackChunk else chunk for chunk in stored]))
        for tried in tries:
            if best is None or len(tried) < len(best):
                best = tried
    return best
