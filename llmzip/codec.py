"""Compressor and decompressor: the pipeline from input bytes to an archive and back.

``LmzCompressor`` and ``LmzDecompressor`` hold a loaded model so that many inputs can be
processed without reloading it (like python-zstandard's context objects).
``llmzip.compress`` / ``llmzip.decompress`` are one-shot conveniences over them.

Compression, in order: split the input (:mod:`llmzip.chunking`); train a memory vector for
every eligible chunk in fixed, journaled groups (:mod:`llmzip.groups`, :mod:`llmzip.train`);
choose each chunk's kind, every choice restored by extract's own computation first
(:mod:`llmzip.choose`); pack the container (:mod:`llmzip.container`).

Decompression: parse and check the container, refuse a model whose identity differs from
the archive's before decoding anything, let each kind restore its chunks, and check every
chunk and the whole output against their xxh64 checksums. Nothing is returned unless
every check passed."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llmzip import __version__, chunking, container, groups, kinds
from llmzip.choose import KindChooser, looks_binary, smallest_archive, whole_input
from llmzip.config import (CODECS, CODED_BITS, DEFAULT_CHUNK_TOKENS, DEFAULT_CODEC, DEFAULT_CUT_STEPS,
                           DEFAULT_THREADS, DEFAULT_VECTOR_FORM, FALLBACK_CHUNK_TOKENS, FALLBACK_VECTOR_FORM)
from llmzip.decode import torch_dtype as _torch_dtype
from llmzip.errors import ChecksumError, InputError, LimitError, ModelError, ModelMismatchError
from llmzip.forms import IntVectorForm, LmCorrectedVectorForm
from llmzip.identity import ModelIdentity, recorded_identity
from llmzip.journal import JournalEntry
from llmzip.kinds.base import DEFAULT_DECODE_GROUP
from llmzip.kinds.memory_int import qmax
from llmzip.kinds.zstd import FallbackChunk
from llmzip.model import DEFAULT_SPEC, LoadedModel, load_model, peek_hidden_size, torch_threads
from llmzip.train import MemoryTrainer, TrainConfig, configured_start
from llmzip.wire import MAX_DECODE_GROUP

log = logging.getLogger(__name__)


StepCallback = Callable[[int, int, float], None]  # (step, chunks in batch, mean loss)
ChunkCallback = Callable[[int, int], None]  # (chunks finished, chunks to train)
ProgressCallback = Callable[[int, int], None]  # (tokens decoded, tokens to decode)


@dataclass
class CompressReport:
    """What one compression did, for the CLI's summary line and for API callers."""

    input_size: int = 0
    archive_size: int = 0
    chunks: int = 0  # chunk records in the archive (consecutive zstd chunks share one, as info counts them)
    ineligible_chunks: int = 0  # not valid UTF-8, or the tokenizer does not round-trip them
    memory_chunks: int = 0  # chunks stored as memory vectors
    standalone_chunks: int = 0  # of those, vectors that regenerate their chunk alone (no corrections)
    standalone_bytes: int = 0  # input bytes those standalone vectors hold
    lm_chunks: int = 0
    fallback_chunks: int = 0  # zstd and stored records
    not_utf8_bytes: int = 0
    binary: bool = False  # mostly not text (choose.looks_binary): stored whole, nothing trained or LM-coded
    resumed_chunks: int = 0
    seconds: float = 0.0
    ineligible: dict[str, int] = field(default_factory=dict)  # reason -> bytes
    kind_counts: dict[str, int] = field(default_factory=dict)  # kind name -> chunks, as `llmzip info` counts them

    def count(self, archive: bytes, vector_kind) -> None:
        """The chunk counts of the archive as written (as ``llmzip info`` counts them:
        neighbouring zstd chunks are one record), and its size."""
        info = container.read_header(archive)
        counts = self.kind_counts = dict(info.chunk_counts)
        self.chunks = sum(counts.values())
        self.memory_chunks = counts.get(vector_kind.name, 0)
        self.lm_chunks = counts.get(kinds.lm.KIND.name, 0)
        self.fallback_chunks = self.chunks - self.memory_chunks - self.lm_chunks
        self.standalone_chunks, self.standalone_bytes = info.standalone_chunks, info.standalone_bytes
        self.archive_size = len(archive)


@dataclass(frozen=True)
class ChunkCheck:
    """One chunk restored at extract/verify time."""

    index: int
    kind: str  # the kind's name: "memory", "zstd", ...
    length: int
    decode_margin: float | None  # smallest top-1/top-2 gap of this decode (kinds that decode)
    recorded_margin: float | None  # the smallest gap measured at compress time


class LmzCompressor:
    """Reusable compressor: loads the model once, compresses many inputs.

    Keyword-only options (each documented once, here):

    ``model``: model spec (``"default"``, ``org/name@commit``, a directory, a ``.gguf``).
    ``device``: torch device for training and decoding (``"cpu"``, ``"cuda"``, ...).
    ``threads``: torch CPU threads each compression runs with (set for the call, restored
    after it); None keeps the process's setting (the CLI's default is
    :func:`llmzip.model.free_cores` instead). Default :data:`llmzip.config.DEFAULT_THREADS`.
    ``chunk_tokens``: token budget per chunk; default per model (:data:`DEFAULT_CHUNK_TOKENS`).
    ``min_chunk_tokens``: with codec ``memory``, a chunk that no vector holds alone is cut
    in pieces of at most half its budget and each piece trained, while that half is at
    least this many tokens (:meth:`_memory_candidates`); default half the chunk budget (one
    round: 64-token chunks of the default model, then 32-token pieces). A vector of the
    default form holds 8 of 8 32-token chunks of the paper's English and 2 of 8 64-token
    ones (BENCHMARKS.md, "Standalone memory vectors"), at the same bytes: halving trades
    archive size for chunks regenerated by a vector alone. Set it to ``chunk_tokens`` for
    no halving.
    ``cut_steps``: the step budget of a chunk that would be cut if no vector held it
    (``max_steps`` stays the budget of the others); default :data:`DEFAULT_CUT_STEPS`.
    Cutting gives each piece a vector in few steps (32-token pieces of the default form:
    97-288), so a long chunk that has not converged by then is cheaper cut than trained on.
    ``train``: a :class:`llmzip.config.TrainConfig` (margin, steps, batch size, lr, dtype, and the
    stored form: ``rank``/``bits``, None = the model's default in :data:`DEFAULT_VECTOR_FORM`;
    ``grid``/``sparsity`` of coded vectors; ``corrections``: 0, every vector a memory token).
    ``zstd_level``: level for the fallback chunks (default 19).
    ``metadata``: extra ``str -> str`` pairs stored in the archive header.
    ``decode_group``: memory chunks decoded together, at compress-time verification and
    at extract (recorded in the archive; default :data:`llmzip.kinds.base.DEFAULT_DECODE_GROUP`).
    ``loaded``: an already loaded :class:`llmzip.model.LoadedModel` (skips ``model``).
    ``codec``: ``"memory"`` (train memory vectors, the product for embeddings; the
    default), ``"lm"`` (LM-code each eligible chunk where that is smaller than zstd, no
    training; default chunk budget :data:`llmzip.kinds.lm.LM_CHUNK_TOKENS`) or ``"auto"``
    (for size: the smallest of its own choice, each chunk in its smallest exact kind, of
    what ``memory`` would write before cutting chunks (``min_chunk_tokens``) and what ``lm``
    would write). A chunk without a vector is stored with
    whichever of zstd and lm makes the archive smaller. Never bigger than it must be
    (docs/DESIGN.md, invariant 10): ``lm`` and ``auto`` archives, and ``memory`` archives
    that keep no vector, are at most the whole input stored or in one zstd frame, in a
    model-free archive (:func:`llmzip.choose.whole_input`). Input that is mostly not text
    (:func:`llmzip.choose.looks_binary`) is stored so without training or LM coding, and
    no vector is trained for an input smaller than any vector of the form
    (:meth:`smallest_vector_record`).
    ``train_small_inputs``: train vectors even for an input smaller than the smallest vector
    of the form (:meth:`smallest_vector_record`), which by default gets none (tests with the
    fixture model's short sentences; research).
    ``group_runner``: what trains the groups, ``runner(compressor, chunks, [(number, group, budgets),
    ...], on_step)`` yielding ``(number, entries)`` in any order; default
    :func:`llmzip.groups.train_groups_here` (this process); :class:`llmzip.distributed.WorkerPool` runs
    them on Ray workers. A group's result depends only on its chunks and the settings.
    ``runner``: where the verification decodes and the LM coding run
    (:func:`llmzip.kinds.base.map_calls`): None, this process (the default), or a
    :class:`llmzip.distributed.WorkerPool` holding the same model; the archive is the same.
    """

    def __init__(
        self,
        *,
        model: str = DEFAULT_SPEC,
        device: str = "cpu",
        threads: int | None = DEFAULT_THREADS,
        chunk_tokens: int | None = None,
        min_chunk_tokens: int | None = None,
        cut_steps: int = DEFAULT_CUT_STEPS,
        train: TrainConfig | None = None,
        zstd_level: int = 19,
        metadata: dict[str, str] | None = None,
        decode_group: int = DEFAULT_DECODE_GROUP,
        loaded: LoadedModel | None = None,
        codec: str = DEFAULT_CODEC,
        group_runner=None,
        runner=None,
        train_small_inputs: bool = False,
    ):
        if codec not in CODECS:
            raise InputError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
        self.codec = codec
        self.threads = _checked_threads(threads)
        if not 1 <= decode_group <= MAX_DECODE_GROUP:
            raise InputError(f"decode_group must be in 1..{MAX_DECODE_GROUP}, got {decode_group}")
        if chunk_tokens is not None and not 1 <= chunk_tokens <= container.MAX_TOKENS_PER_CHUNK:
            raise InputError(f"chunk_tokens must be in 1..{container.MAX_TOKENS_PER_CHUNK}, got {chunk_tokens}")
        self.loaded = loaded if loaded is not None else load_model(model, device=device)
        self.lm_chunk_tokens = chunk_tokens or kinds.lm.LM_CHUNK_TOKENS  # auto's lm candidate: what --codec lm cuts
        self.chunk_tokens = chunk_tokens or (kinds.lm.LM_CHUNK_TOKENS if codec == "lm" else DEFAULT_CHUNK_TOKENS.get(
            self.loaded.identity.source_kind, FALLBACK_CHUNK_TOKENS
        ))
        self.min_chunk_tokens = min_chunk_tokens if min_chunk_tokens is not None else max(1, self.chunk_tokens // 2)
        if not 1 <= self.min_chunk_tokens <= self.chunk_tokens:
            raise InputError(f"min_chunk_tokens must be in 1..{self.chunk_tokens} (the chunk budget), "
                             f"got {self.min_chunk_tokens}")
        if cut_steps < 1:
            raise InputError(f"cut_steps must be at least 1, got {cut_steps}")
        self.cut_steps = cut_steps
        config = train if train is not None else TrainConfig()
        source = self.loaded.identity.source_kind
        defaults = dict(zip(("rank", "bits"), DEFAULT_VECTOR_FORM.get(source, FALLBACK_VECTOR_FORM)))
        self.train_config = dataclasses.replace(config, **{name: value for name, value in defaults.items()
                                                           if getattr(config, name) is None})
        if self.train_config.rank > self.loaded.identity.hidden_size:
            raise InputError(f"rank must be at most the model's hidden size {self.loaded.identity.hidden_size}, "
                             f"got {self.train_config.rank}")
        start = configured_start(self.train_config, self.loaded.identity.weights_fingerprint)
        self.offset = kinds.memory_int.offset_for(self.loaded.identity.weights_fingerprint)
        self.trainer = MemoryTrainer(self.loaded.model, self.train_config, start=start, form=self._vector_form())
        self.vector_kind = self.trainer.form.kind  # memory, memory-int or memory-int-lm
        self.zstd_level = zstd_level
        self.metadata = {"creator": f"llmzip {__version__}", **(metadata or {})}
        self.given_metadata = dict(metadata or {})  # all a model-free archive records: no creator
        self.decode_group = decode_group
        self.group_runner = group_runner if group_runner is not None else groups.train_groups_here
        self.runner = runner
        if runner is not None:
            runner.check_model(self.loaded)
        self.train_small_inputs = train_small_inputs

    def _vector_form(self):
        """How vectors are trained and stored: rank 0 a full fp16 vector (kind memory, the
        trainer's default); up to 8 bits range coded with corrections whose tokens the model
        codes (memory-int-lm: the coded coefficients take 12 % fewer bytes at 4 bits, a
        coded correction ~1 B instead of ~3.2); wider, a fixed-width memory-int vector."""
        config, d = self.train_config, self.loaded.identity.hidden_size
        if not config.rank:
            return None
        if config.bits not in CODED_BITS:
            return IntVectorForm(config.rank, config.bits, self.offset, d)
        try:
            return LmCorrectedVectorForm(config.rank, config.bits, self.offset, d, config.grid, config.sparsity)
        except ValueError as exc:
            raise InputError(str(exc)) from None

    def smallest_vector_record(self) -> int:
        """The fewest bytes one vector of this form can take (:func:`smallest_vector_record`)."""
        config = self.train_config
        return smallest_vector_record(self.vector_kind, config.rank, config.bits, self.loaded.identity.hidden_size)

    def settings(self, chunk_tokens: int | None = None) -> dict:
        """What the archive header records of the settings (format/CODEC.md, "Settings"):
        the chunk budget (this compressor's, or ``chunk_tokens``), the margin every stored
        vector was verified with, and the decode group it was verified in."""
        names = {"chunk_tokens": chunk_tokens or self.chunk_tokens, "verify_margin": self.train_config.verify_margin,
                 "decode_group": self.decode_group}
        return {container.SETTINGS_KEYS[name]: value for name, value in names.items()}

    def _journal_key(self, data: bytes) -> dict:
        """Everything that determines the stored chunks: a journal is resumed only if all match."""
        # The trainer's config: train_config with the optimiser resolved for the form.
        train = {name: value for name, value in dataclasses.asdict(self.trainer.config).items() if name != "device"}
        train["betas"] = list(train["betas"])
        train["train_dtype"] = self.trainer.train_dtype  # "auto" as resolved on this machine
        if self.trainer.start is not None:  # the fitted start this llmzip ships
            train["start"] = container.checksum(self.trainer.start.numpy().tobytes())
        return {
            "input_size": len(data),
            "input_xxh64": container.checksum(data),
            "chunk_tokens": self.chunk_tokens,
            "min_chunk_tokens": self.min_chunk_tokens,
            "cut_steps": self.cut_steps,
            "codec": self.codec,
            "train": train,
            "model": self.loaded.identity.to_dict(),
        }

    def compress(self, data: bytes, **kwargs) -> bytes:
        """Compress ``data`` to archive bytes (see :meth:`compress_with_report`)."""
        archive, _ = self.compress_with_report(data, **kwargs)
        return archive

    def compress_with_report(
        self,
        data: bytes,
        *,
        journal_path: str | Path | None = None,
        on_step: StepCallback | None = None,
        on_chunk: ChunkCallback | None = None,
        on_verify: ProgressCallback | None = None,
        on_code: ProgressCallback | None = None,
    ) -> tuple[bytes, CompressReport]:
        """Compress ``data``; return the archive bytes and a :class:`CompressReport`.

        With ``journal_path``, finished training groups are journaled there and a matching
        journal from an interrupted run is resumed. The journal stays on disk: the caller
        deletes it once the archive itself is safely written. ``on_step`` and ``on_chunk``
        report training, ``on_verify(done, total)`` the final decode of every stored vector,
        ``on_code(done, total)`` the tokens LM-coded.
        """
        with torch_threads(self.threads):
            return self._compress(data, journal_path, on_step, on_chunk, on_verify, on_code)

    def _compress(self, data, journal_path, on_step, on_chunk, on_verify, on_code) -> tuple[bytes, CompressReport]:
        started = time.perf_counter()
        data = _as_bytes(data)
        if len(data) > container.MAX_INPUT_SIZE:
            raise LimitError(f"input is {len(data):,} bytes; the format's limit is {container.MAX_INPUT_SIZE:,}")
        report = CompressReport(input_size=len(data), binary=looks_binary(data))
        candidates = []  # (chunks as stored, archive, pack): the smallest archive is kept, the first of equals
        if report.binary:
            log.info("llmzip: input is mostly not text; stored whole without training or LM coding")
        if not report.binary and self.codec != "lm":
            candidates += self._memory_candidates(data, report, journal_path, on_step, on_chunk, on_verify, on_code)
        if not report.binary and self.codec != "memory":
            lm_chunks = split_counted(self.loaded.tokenizer, data, self.lm_chunk_tokens, report if self.codec == "lm" else None)
            def pack_lm(chosen):
                return self.pack_archive(chosen, data, self.lm_chunk_tokens)

            initial = [FallbackChunk(chunk.data) for chunk in lm_chunks]
            candidates.append((*self._chooser("lm").choose(initial, lm_chunks, pack_lm, on_code=on_code), pack_lm))
        # A memory archive's vectors are its product: it keeps them. Everything else may be
        # beaten by the whole input stored or in one zstd frame, without a model.
        def pack(chosen):
            return self.pack_archive(chosen, data)

        if self.codec != "memory" or not any(kinds.of(chunk) is self.vector_kind
                                             for stored, *_ in candidates[:1] for chunk in stored):
            candidates += [(stored, pack(stored), pack) for stored in whole_input(data)]
        archive = smallest_archive(candidates)
        report.count(archive, self.vector_kind)
        report.seconds = time.perf_counter() - started
        return archive, report

    def _chooser(self, codec: str) -> KindChooser:
        return KindChooser(self.loaded, self.vector_kind, codec, self.decode_group,
                           self.train_config.verify_margin, self.zstd_level, self.runner)

    def _memory_candidates(self, data: bytes, report: CompressReport, journal_path, on_step, on_chunk,
                           on_verify, on_code) -> list:
        """Train (unless the input is smaller than any vector) and choose each chunk's kind
        at this compressor's chunk budget: the codec's own choice, and in ``auto`` also
        ``memory``'s (so auto is never bigger than memory)."""
        chunks = split_counted(self.loaded.tokenizer, data, self.chunk_tokens, report)
        trained = {}
        if self.train_small_inputs or len(data) >= self.smallest_vector_record():
            chunks, trained, report.resumed_chunks = self._train_halving(chunks, data, journal_path, on_step,
                                                                          on_chunk)
        else:
            log.info("llmzip: %d B of input is less than any %s vector; nothing trained", len(data),
                     self.vector_kind.name)
        initial = []
        for index, chunk in enumerate(chunks):
            entry = trained.get(index)
            if entry is not None and entry.vector is not None:
                initial.append(self.vector_kind.make_chunk(entry.vector, entry.n_tokens, len(chunk.data),
                                                           container.chunk_check(chunk.data), entry.min_margin,
                                                           self.loaded.identity.hidden_size))
            else:
                initial.append(FallbackChunk(data=chunk.data))

        def pack(chosen):
            return self.pack_archive(chosen, data)

        candidates = [(*self._chooser(self.codec).choose(list(initial), chunks, pack, on_verify, on_code), pack)]
        if self.codec == "auto" and any(kinds.of(chunk) is self.vector_kind for chunk in initial):
            candidates.append((*self._chooser("memory").choose(list(initial), chunks, pack), pack))
        return candidates

    def _train_halving(self, chunks: list, data: bytes, journal_path, on_step, on_chunk) -> tuple[list, dict, int]:
        """Train every eligible chunk; then, with codec ``memory``, cut each chunk that no
        vector holds alone into pieces of at most half its budget and train those, while
        the half is at least ``min_chunk_tokens``. Returns (the chunks in input order, chunk
        -> entry, chunks resumed from the journal).

        Why: one vector holds about as many bytes at 32 tokens as at 64 (the same 640
        coefficients), but 64-token chunks often exceed what it can hold; a chunk without
        a vector is no memory token (issue 29). Each round's pieces follow from the rounds
        before, which are deterministic or journaled, so a resumed run cuts the same
        pieces; the rounds share the journal, their groups numbered on."""
        key = self._journal_key(data)
        every = list(chunks)  # every chunk trained, in the order first trained: the journal's indices
        order = list(range(len(every)))  # the chunks as the archive holds them: indices into `every`
        finished = 0  # chunks the earlier rounds trained: one progress count over all rounds

        def counted(done: int, total: int) -> None:
            on_chunk(finished + done, finished + total)

        trained, resumed, next_group = groups.train_all(self, every, journal_path, key, on_step,
                                                        counted if on_chunk else None)
        finished = sum(chunk.eligible for chunk in every)
        for budget in self.cut_budgets():
            new_order, pieces, cut_chunks = [], [], 0
            for index in order:
                chunk, entry = every[index], trained.get(index)
                if chunk.eligible and (entry is None or entry.vector is None) and len(chunk.token_ids) > budget:
                    cut = [dataclasses.replace(piece, start=chunk.start + piece.start)
                           for piece in chunking.split(chunk.data, self.loaded.tokenizer, max_tokens=budget)]
                    pieces += range(len(every), len(every) + len(cut))
                    new_order += range(len(every), len(every) + len(cut))
                    every += cut
                    cut_chunks += 1
                else:
                    new_order.append(index)
            if not pieces:
                break
            log.info("llmzip: %d chunk%s held by no vector; training %s again as %d pieces of at most %d tokens",
                     cut_chunks, "s" if cut_chunks > 1 else "", "them" if cut_chunks > 1 else "it", len(pieces), budget)
            order = new_order
            more, resumed_here, planned = groups.train_all(self, every, journal_path, key, on_step,
                                                           counted if on_chunk else None, indices=pieces,
                                                           first_group=next_group)
            trained.update(more)
            resumed += resumed_here
            next_group += planned
            finished += sum(every[i].eligible for i in pieces)
        return [every[i] for i in order], {position: trained[index] for position, index in enumerate(order)
                                           if index in trained}, resumed

    def pack_archive(self, stored: list, data: bytes, chunk_tokens: int | None = None) -> bytes:
        """The archive of ``stored`` (chunks already chosen and verified, in input order, for
        the input ``data``) with this compressor's header; with no chunk that needs a model, a
        model-free one (format 2.5: no model, settings, creator or input xxh64; only given
        metadata). Compress packs every candidate with it; tests build archives of one kind."""
        if not any(kinds.of(chunk).needs_model for chunk in stored):
            header = container.Header(model={}, settings={}, vector_dim=None, input_size=len(data),
                                      input_xxh64=None, metadata=self.given_metadata)
            return container.pack(header, stored, zstd_level=self.zstd_level)
        settings = self.settings(chunk_tokens)
        if any(kinds.of(chunk) is kinds.lm.KIND for chunk in stored):
            settings.update(kinds.lm.SETTINGS)
        if self.offset is not None and any(isinstance(kinds.of(chunk), kinds.memory_int.IntVectorKind) for chunk in stored):
            settings[kinds.memory_int.OFFSET_KEY] = kinds.memory_int.offset_checksum(self.offset)
        header = container.Header(
            model=self.loaded.identity.to_header(),
            settings=settings,
            vector_dim=self.loaded.identity.hidden_size,
            input_size=len(data),
            input_xxh64=container.checksum(data),
            metadata=self.metadata,
        )
        return container.pack(header, stored, zstd_level=self.zstd_level)

    def cut_budgets(self) -> list[int]:
        """The token budgets of the rounds that cut the chunks no vector holds alone
        (:meth:`_train_halving`): half the chunk budget, halved again while at least
        ``min_chunk_tokens``; none unless the codec is ``memory``."""
        budgets = []
        budget = self.chunk_tokens // 2
        while self.codec == "memory" and budget >= self.min_chunk_tokens:
            budgets.append(budget)
            budget //= 2
        return budgets

    def step_budgets(self, chunks, group: list[int]) -> list[int]:
        """Each chunk's step budget in ``group``: ``cut_steps`` for a chunk a later round would
        cut if no vector held it (longer than the last round's pieces), ``max_steps`` for
        the others, which have no cheaper way to a vector."""
        smallest = min(self.cut_budgets(), default=None)
        steps = self.train_config.max_steps
        return [min(steps, self.cut_steps) if smallest is not None and len(chunks[index].token_ids) > smallest
                else steps for index in group]

    def train_group(self, chunks, group: list[int], budgets: list[int], on_step=None) -> list[JournalEntry]:
        """Train one group of ``chunks`` here, each chunk for at most its step budget in
        ``budgets`` (:meth:`step_budgets`, which the group plan carries: a worker's
        compressor does not know the cutting settings) (:func:`llmzip.groups.train_group`);
        what every group runner calls."""
        return groups.train_group(self.trainer, self.loaded.tokenizer, chunks, group, budgets, on_step)



def smallest_vector_record(kind, rank: int, bits: int, d: int) -> int:
    """A lower bound of the bytes one vector of this form takes in an archive, from the
    form alone (no training): the record's framing (kind, two varints, xxh32: 7 B),
    n_tokens (1 B) and min_margin (4 B), then ``memory``: d fp16 values; ``memory-int``:
    rank, bits, scale and the packed coefficients; ``memory-int-lm``: rank, bits, scale
    and a code no shorter than the most probable coefficients' (format/CODEC.md, "Coded
    integer vectors": under counts that start at 1 and grow by 1, no k values of K code
    in fewer than log2 C(k+K-1, K-1) bits, which k equal values take), less one 32-bit
    word of slack for the coder's rounding. An input smaller than this gets no vector."""
    fixed = 7 + 1 + 4
    if kind is kinds.memory.KIND:
        return fixed + 2 * d
    head = len(container.varint(rank)) + 1 + 2
    if kind is kinds.memory_int.KIND:
        return fixed + head + -(-rank * bits // 8)
    values = 2 * qmax(bits) + 1
    code_bits = math.log2(math.comb(rank + values - 1, values - 1))
    return fixed + head + max(1, int(code_bits // 8) - 4)


def split_counted(tokenizer, data: bytes, chunk_tokens: int, report: CompressReport | None) -> list:
    """``data`` cut into chunks of at most ``chunk_tokens`` tokens; what is not eligible
    is counted in ``report`` (when given) and logged."""
    chunks = chunking.split(data, tokenizer, max_tokens=chunk_tokens)
    if report is not None:
        report.ineligible = {reason.value: n for reason, n in chunking.ineligible_bytes(chunks).items()}
        report.ineligible_chunks = sum(not chunk.eligible for chunk in chunks)
        report.not_utf8_bytes = report.ineligible.get(chunking.Ineligible.NOT_UTF8.value, 0)
        if report.not_utf8_bytes:
            log.warning("llmzip: input is not valid UTF-8; %d bytes stored with zstd", report.not_utf8_bytes)
    return chunks

class LmzDecompressor:
    """Reusable decompressor. ``model=None`` loads the model the archive names (the
    default model, or a pinned hub model); a path-based source must be given explicitly.
    Loaded models are kept, so extracting many archives loads each model once. ``threads``
    as for :class:`LmzCompressor`: each decompress and verify runs with that many.

    ``runner_for``: decode on workers. ``runner_for(spec, load)`` returns a call runner
    (:func:`llmzip.kinds.base.map_calls`; a :class:`llmzip.distributed.WorkerPool`) that
    holds the model ``spec`` names, loaded with the keyword arguments ``load`` of
    :func:`llmzip.model.load_model` (the archive's dtype and attention); the archive's
    decode groups then run there. One runner is kept at a time (another model's archive
    closes it); :meth:`close` closes the last."""

    def __init__(self, *, model: str | None = None, device: str = "cpu", threads: int | None = DEFAULT_THREADS,
                 loaded: LoadedModel | None = None, runner_for=None):
        self.model_spec = model
        self.device = device
        self.threads = _checked_threads(threads)
        self._loaded: dict[str, LoadedModel] = {}
        if loaded is not None:
            self._loaded[model or "<given>"] = loaded
            self.model_spec = model or "<given>"
        self.runner_for = runner_for
        self._runner, self._runner_spec = None, None

    def close(self) -> None:
        """Close the runner :attr:`runner_for` made, if any."""
        if self._runner is not None:
            self._runner.close()
            self._runner, self._runner_spec = None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def decompress(self, data: bytes, *, on_progress: ProgressCallback | None = None) -> bytes:
        """Restore the exact input bytes, or raise an ``LmzError``. ``on_progress(done,
        total)`` reports decoded tokens as they come."""
        archive = container.unpack(_as_bytes(data))
        with torch_threads(self.threads):
            pieces = [piece for _, piece in self._restore(archive, on_progress)]
        return _join_checked(archive, pieces)

    def verify(self, data: bytes, *, on_progress: ProgressCallback | None = None) -> list[ChunkCheck]:
        """Restore every chunk and check every checksum without keeping the output."""
        archive = container.unpack(_as_bytes(data))
        checks, pieces = [], []
        with torch_threads(self.threads):
            for check, piece in self._restore(archive, on_progress):
                checks.append(check)
                pieces.append(piece)
        _join_checked(archive, pieces)
        return checks

    def model_for(self, archive: container.Archive) -> LoadedModel:
        """The model to decode ``archive`` with, its identity checked against the archive's.

        What the header alone can rule out (the hidden size, from the model's config.json)
        is compared before any weights load."""
        spec, expected = self._source(archive)
        if spec not in self._loaded:
            hidden_size = peek_hidden_size(spec)
            if hidden_size is not None and hidden_size != expected.hidden_size:
                raise ModelMismatchError(
                    f"model {spec!r} has hidden size {hidden_size}, but the archive's model "
                    f"{expected.describe()} has {expected.hidden_size}: refusing before loading it"
                )
            self._loaded[spec] = load_model(spec, device=self.device, **_load_options(expected))
        loaded = self._loaded[spec]
        loaded.identity_for(expected.fingerprint_version).check_matches(expected)
        return loaded

    def _source(self, archive: container.Archive) -> tuple[str, ModelIdentity]:
        """(the spec of the model to decode ``archive`` with, the identity it records)."""
        expected = recorded_identity(archive.version, archive.header)
        return self.model_spec or _spec_from_identity(expected), expected

    def _runner_with(self, archive: container.Archive, loaded: LoadedModel):
        """The runner for ``archive``'s model (None without :attr:`runner_for`), checked to
        hold ``loaded``'s model."""
        if self.runner_for is None:
            return None
        spec, expected = self._source(archive)
        if self._runner_spec != spec:
            self.close()
            self._runner, self._runner_spec = self.runner_for(spec, _load_options(expected)), spec
        self._runner.check_model(loaded)
        return self._runner

    def _restore(self, archive: container.Archive, on_progress=None) -> Iterator[tuple[ChunkCheck, bytes]]:
        """Yield each chunk's check and bytes in archive order, raising ``ChecksumError``
        on any mismatch. Each kind restores all of its chunks at once (so it can batch)."""
        by_kind: dict = {}
        for index, chunk in enumerate(archive.chunks):
            by_kind.setdefault(kinds.of(chunk), []).append((index, chunk))
        for kind, items in by_kind.items():
            kind.check_before_model(items, archive)
        loaded = self.model_for(archive) if any(kind.needs_model for kind in by_kind) else None
        runner = self._runner_with(archive, loaded) if loaded is not None else None
        total = sum(kind.work(chunk) for kind, items in by_kind.items() for _, chunk in items)
        done = 0

        def advance(units: int) -> None:
            nonlocal done
            done += units
            on_progress(done, total)

        if on_progress is not None:
            on_progress(0, total)
        restored = {}
        for kind, items in by_kind.items():
            model = loaded if kind.needs_model else None
            for result in kind.restore(items, model, archive, advance if on_progress is not None else None,
                                       runner if kind.needs_model else None):
                restored[result.index] = (kind, result)
        for index, chunk in enumerate(archive.chunks):
            kind, result = restored[index]
            # zstd chunks' bytes were checked against their records by the container
            recorded = container.chunk_check(chunk.data, archive.version) if kind.in_fallback_frame else chunk.check
            if len(result.data) != chunk.length or container.chunk_check(result.data, archive.version) != recorded:
                detail = "" if result.margin is None else f" (decode margin {result.margin:.3f}, recorded {kind.margin(chunk):.3f})"
                raise ChecksumError(f"chunk {index}: restored bytes do not match the stored checksum{detail}")
            check = ChunkCheck(index, kind.name, chunk.length, result.margin, kind.margin(chunk))
            yield check, result.data




def compress(data: bytes, **options) -> bytes:
    """One-shot compression; ``options`` are :class:`LmzCompressor`'s."""
    return LmzCompressor(**options).compress(data)


def decompress(data: bytes, **options) -> bytes:
    """One-shot decompression; ``options`` are :class:`LmzDecompressor`'s."""
    return LmzDecompressor(**options).decompress(data)


def export(data: bytes) -> bytes:
    """The memory vectors of an archive as safetensors bytes, for use as soft prompts.

    Tensor ``vectors`` is (N, d), one row per chunk that has a vector, in input order:
    float16 when every row is a ``memory`` vector (stored so), float32 when any is a
    ``memory-int`` vector (rebuilt exactly; fp16 rows convert exactly). Metadata (JSON strings): ``llmzip.chunks`` (per row: chunk index, byte offset,
    length, ``standalone`` (the vector alone regenerates the chunk: no corrections), token count, recorded margin), ``llmzip.model`` (the model identity),
    ``llmzip.settings``. format/CODEC.md says how to decode a row with plain transformers.
    No model is loaded.
    """
    import numpy
    from safetensors.numpy import save

    archive = container.unpack(_as_bytes(data))
    rows, vectors, offset = [], [], 0
    for index, chunk in enumerate(archive.chunks):
        row = kinds.of(chunk).export_row(chunk, archive)
        if row is not None:
            vectors.append(row.pop("vector"))
            standalone = kinds.of(chunk).describe(chunk)["standalone"]
            rows.append({"chunk": index, "offset": offset, "length": chunk.length, "standalone": standalone, **row})
        offset += chunk.length
    if not vectors:
        raise InputError("the archive has no memory vectors (every chunk is stored another way)")
    metadata = {
        "llmzip.chunks": json.dumps(rows),
        "llmzip.model": json.dumps(recorded_identity(archive.version, archive.header).to_dict(), sort_keys=True),
        "llmzip.settings": json.dumps(container.settings_by_name(archive.header.settings, archive.version), sort_keys=True),
    }
    dtype = numpy.result_type(*vectors)  # float16, or float32 if any row is
    return save({"vectors": numpy.stack(vectors).astype(dtype)}, metadata=metadata)


def journal_path_for(output: str | Path) -> Path:
    """Where compress journals its progress for ``output``: beside it."""
    output = Path(output)
    return output.with_name(output.name + ".journal")


def _as_bytes(data) -> bytes:
    """Bytes-like input as bytes; a ``str`` is refused with a message that says what to do."""
    if isinstance(data, str):
        raise TypeError("llmzip works on bytes, not str: pass text.encode('utf-8') (or the file's raw bytes)")
    try:
        return bytes(data)
    except TypeError:
        raise TypeError(f"llmzip works on bytes, not {type(data).__name__}") from None


def _join_checked(archive: container.Archive, pieces: list[bytes]) -> bytes:
    output = b"".join(pieces)
    # a model-free archive's xxh64 was computed from these very chunks by the container
    if len(output) != archive.header.input_size or container.checksum(output) != archive.header.input_xxh64:
        raise ChecksumError("restored input does not match the archive's whole-input xxh64")
    return output


def _checked_threads(threads):
    """``threads`` if it is None or an int of at least 1; else an ``InputError``."""
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise InputError(f"threads must be None or an integer of at least 1, got {threads!r}")
    return threads


def _load_options(identity: ModelIdentity) -> dict:
    """The keyword arguments of ``load_model`` an archive's model identity asks for."""
    return {"dtype": _torch_dtype(identity.dtype), "attn_implementation": identity.attn_implementation}


def _spec_from_identity(identity: ModelIdentity) -> str:
    if identity.source_kind == "default":
        return DEFAULT_SPEC
    if identity.source_kind == "hub" and identity.source_revision:
        return f"{identity.source_id}@{identity.source_revision}"
    raise ModelError(
        f"archive was made with the {identity.source_kind} model {identity.source_id!r}; "
        f"pass it with --model (or model=...)"
    )
