"""Compressor and decompressor: chunking, training, fallback, container, checks.

``LmzCompressor`` and ``LmzDecompressor`` hold a loaded model so that many inputs can be
processed without reloading it (like python-zstandard's context objects).
``llmzip.compress`` / ``llmzip.decompress`` are one-shot conveniences over them.

Compression: split the input (:mod:`llmzip.chunking`), train a memory vector for every
eligible chunk in fixed groups (:mod:`llmzip.train`, resumable through
:mod:`llmzip.journal`), keep a vector only if the canonical decoder reproduced the chunk
from its stored fp16 form, and store every other chunk with zstd (:mod:`llmzip.container`).

Decompression: parse and check the container, refuse a model whose identity differs from
the archive's before decoding anything, decode each memory chunk with the same decoder,
and check every chunk and the whole output against their xxh64 checksums. Nothing is
returned unless every check passed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from llmzip import __version__, chunking, container
from llmzip.decode import TEMPLATE, decode
from llmzip.errors import ChecksumError, FormatError, ModelError
from llmzip.journal import Journal, JournalEntry
from llmzip.model import DEFAULT_SPEC, LoadedModel, ModelIdentity, load_model
from llmzip.train import MemoryTrainer, TrainConfig

log = logging.getLogger(__name__)

# Default token budget per chunk, by model source. See README "Choosing --chunk-tokens":
# the engine benchmark (BENCHMARKS.md) trains 22-24-token chunks in ~300 steps and an
# 81-token chunk in ~700 on Gemma 3 270M; 64 tokens keeps one vector per ~250 bytes of
# English at a few hundred steps. Other models start from the conservative 32.
DEFAULT_CHUNK_TOKENS = {"default": 64}
FALLBACK_CHUNK_TOKENS = 32

StepCallback = Callable[[int, int, float], None]  # (step, chunks in batch, mean loss)
ChunkCallback = Callable[[int, int], None]  # (chunks finished, chunks to train)


@dataclass
class CompressReport:
    """What one compression did, for the CLI's summary line and for API callers."""

    input_size: int = 0
    archive_size: int = 0
    chunks: int = 0
    ineligible_chunks: int = 0  # not valid UTF-8, or the tokenizer does not round-trip them
    memory_chunks: int = 0
    fallback_chunks: int = 0
    not_utf8_bytes: int = 0
    resumed_chunks: int = 0
    seconds: float = 0.0
    ineligible: dict[str, int] = field(default_factory=dict)  # reason -> bytes


@dataclass(frozen=True)
class ChunkCheck:
    """One chunk restored at extract/verify time."""

    index: int
    kind: str  # "memory" | "zstd"
    length: int
    margin: float | None  # decode's smallest top-1/top-2 gap (memory chunks only)
    promised_margin: float | None  # the margin recorded at compress time


class LmzCompressor:
    """Reusable compressor: loads the model once, compresses many inputs.

    Keyword-only options (each documented once, here):

    ``model``: model spec (``"default"``, ``org/name@commit``, a directory, a ``.gguf``).
    ``device``: torch device for training and decoding (``"cpu"``, ``"cuda"``, ...).
    ``chunk_tokens``: token budget per chunk; default per model (:data:`DEFAULT_CHUNK_TOKENS`).
    ``train``: a :class:`llmzip.train.TrainConfig` (margin, steps, batch size, lr, dtype).
    ``zstd_level``: level for the fallback chunks (default 19).
    ``metadata``: extra ``str -> str`` pairs stored in the archive header.
    ``loaded``: an already loaded :class:`llmzip.model.LoadedModel` (skips ``model``).
    """

    def __init__(
        self,
        *,
        model: str = DEFAULT_SPEC,
        device: str = "cpu",
        chunk_tokens: int | None = None,
        train: TrainConfig | None = None,
        zstd_level: int = 19,
        metadata: dict[str, str] | None = None,
        loaded: LoadedModel | None = None,
    ):
        if chunk_tokens is not None and not 1 <= chunk_tokens <= container.MAX_TOKENS_PER_CHUNK:
            raise ValueError(f"chunk_tokens must be in 1..{container.MAX_TOKENS_PER_CHUNK}, got {chunk_tokens}")
        self.loaded = loaded if loaded is not None else load_model(model, device=device)
        self.chunk_tokens = chunk_tokens or DEFAULT_CHUNK_TOKENS.get(
            self.loaded.identity.source_kind, FALLBACK_CHUNK_TOKENS
        )
        self.train_config = train if train is not None else TrainConfig()
        self.trainer = MemoryTrainer(self.loaded.model, self.train_config)
        self.zstd_level = zstd_level
        self.metadata = {"creator": f"llmzip {__version__}", **(metadata or {})}

    def settings(self) -> dict:
        """Everything that determines the archive besides input and model (recorded in it)."""
        train = {
            name: value
            for name, value in dataclasses.asdict(self.train_config).items()
            if name != "device"  # where training ran does not change what is stored
        }
        train["betas"] = ",".join(str(b) for b in train["betas"])
        return {"template": TEMPLATE, "chunk_tokens": self.chunk_tokens, **train}

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
    ) -> tuple[bytes, CompressReport]:
        """Compress ``data``; return the archive bytes and a :class:`CompressReport`.

        With ``journal_path``, finished training groups are journaled there and a matching
        journal from an interrupted run is resumed. The journal stays on disk: the caller
        deletes it once the archive itself is safely written.
        """
        started = time.perf_counter()
        data = bytes(data)
        if len(data) > container.MAX_INPUT_SIZE:
            raise ValueError(f"input is {len(data)} bytes; the format's limit is {container.MAX_INPUT_SIZE}")
        tokenizer = self.loaded.tokenizer
        chunks = chunking.split(data, tokenizer, max_tokens=self.chunk_tokens)
        report = CompressReport(input_size=len(data), chunks=len(chunks))
        report.ineligible = {reason.value: n for reason, n in chunking.ineligible_bytes(chunks).items()}
        report.ineligible_chunks = sum(not chunk.eligible for chunk in chunks)
        report.not_utf8_bytes = report.ineligible.get(chunking.Ineligible.NOT_UTF8.value, 0)
        if report.not_utf8_bytes:
            log.warning("llmzip: input is not valid UTF-8; %d bytes stored with zstd", report.not_utf8_bytes)

        trained = self._train_eligible(data, chunks, journal_path, report, on_step, on_chunk)
        stored: list[container.Chunk] = []
        min_margins = []
        for index, chunk in enumerate(chunks):
            entry = trained.get(index)
            if entry is not None and entry.vector is not None:
                stored.append(
                    container.MemoryChunk(
                        vector=entry.vector,
                        n_tokens=entry.n_tokens,
                        length=len(chunk.data),
                        xxh64=container.checksum(chunk.data),
                        min_margin=entry.min_margin,
                    )
                )
                min_margins.append(entry.min_margin)
            else:
                stored.append(container.FallbackChunk(data=chunk.data))
        header = container.Header(
            model=self.loaded.identity.to_dict(),
            settings=self.settings(),
            vector_dim=self.loaded.identity.hidden_size,
            input_size=len(data),
            input_xxh64=container.checksum(data),
            metadata=self.metadata,
        )
        archive = container.pack(header, stored, zstd_level=self.zstd_level)
        report.archive_size = len(archive)
        report.memory_chunks = len(min_margins)
        report.fallback_chunks = len(stored) - len(min_margins)
        report.seconds = time.perf_counter() - started
        return archive, report

    def _train_eligible(self, data, chunks, journal_path, report, on_step, on_chunk) -> dict[int, JournalEntry]:
        """Train eligible chunks in fixed groups of ``batch_size``; journal each group.

        Groups are fixed (group k = the k-th ``batch_size`` eligible chunks) because batch
        mates change a vector in its last bits; fixed groups make a resumed run train every
        chunk with the same mates as an uninterrupted one, hence identical archives.
        """
        eligible = [index for index, chunk in enumerate(chunks) if chunk.eligible]
        size = self.train_config.batch_size
        groups = [eligible[start : start + size] for start in range(0, len(eligible), size)]
        journal = None
        if journal_path is not None and groups:
            key = {
                "input_size": len(data),
                "input_xxh64": container.checksum(data),
                "settings": self.settings(),
                "model": self.loaded.identity.to_dict(),
            }
            journal = Journal(Path(journal_path), key)
        results: dict[int, JournalEntry] = {}
        done = 0
        if on_chunk is not None:
            on_chunk(0, len(eligible))  # the total is known before the first group finishes
        try:
            for number, group in enumerate(groups):
                entries = journal.groups.get(number) if journal is not None else None
                if entries is not None and [e.index for e in entries] == group:
                    report.resumed_chunks += len(group)
                else:
                    entries = self._train_group(chunks, group, on_step)
                    if journal is not None:
                        journal.append(number, entries)
                results.update((entry.index, entry) for entry in entries)
                done += len(group)
                if on_chunk is not None:
                    on_chunk(done, len(eligible))
        finally:
            if journal is not None:
                journal.close()
        return results

    def _train_group(self, chunks, group: list[int], on_step) -> list[JournalEntry]:
        """Train one group; keep a vector only if the decoder restored the exact bytes."""
        token_lists = [chunks[index].token_ids for index in group]
        entries = []
        for index, ids, result in zip(group, token_lists, self.trainer.train(token_lists, on_step=on_step)):
            # n_tokens <= length is what extract checks before decoding (_check_token_counts).
            keep = result.accepted and len(ids) <= len(chunks[index].data) and self._restores(
                ids, chunks[index].data
            )
            entries.append(
                JournalEntry(
                    index=index,
                    vector=_vector_bytes(result.vector) if keep else None,
                    n_tokens=len(ids),
                    min_margin=float(result.decode_min_margin),
                )
            )
        return entries

    def _restores(self, ids, expected: bytes) -> bool:
        """Invariant 1, end to end. ``result.accepted`` means decode() of the stored fp16
        vector gave exactly ``ids``; here those ids go through the same tokenizer call
        extract uses, so a tokenizer that decodes differently than chunking assumed cannot
        slip a wrong vector into an archive. (Re-running decode() here would repeat the
        trainer's verification: ~10 s per chunk on Gemma 3 270M.)
        """
        return _detokenize(self.loaded, ids) == expected


class LmzDecompressor:
    """Reusable decompressor. ``model=None`` loads the model the archive names (the
    default model, or a pinned hub model); a path-based source must be given explicitly.
    Loaded models are kept, so extracting many archives loads each model once."""

    def __init__(self, *, model: str | None = None, device: str = "cpu", loaded: LoadedModel | None = None):
        self.model_spec = model
        self.device = device
        self._loaded: dict[str, LoadedModel] = {}
        if loaded is not None:
            self._loaded[model or "<given>"] = loaded
            self.model_spec = model or "<given>"

    def decompress(self, data: bytes) -> bytes:
        """Restore the exact input bytes, or raise an ``LmzError``."""
        archive = container.unpack(data)
        pieces = [piece for _, piece in self._restore(archive)]
        return _join_checked(archive, pieces)

    def verify(self, data: bytes) -> list[ChunkCheck]:
        """Restore every chunk and check every checksum without keeping the output."""
        archive = container.unpack(data)
        checks, pieces = [], []
        for check, piece in self._restore(archive):
            checks.append(check)
            pieces.append(piece)
        _join_checked(archive, pieces)
        return checks

    def model_for(self, archive: container.Archive) -> LoadedModel:
        """The model to decode ``archive`` with, its identity checked against the archive's."""
        expected = ModelIdentity.from_dict(archive.header.model)
        spec = self.model_spec or _spec_from_identity(expected)
        if spec not in self._loaded:
            self._loaded[spec] = load_model(spec, device=self.device, dtype=_torch_dtype(expected.dtype),
                                            attn_implementation=expected.attn_implementation)
        loaded = self._loaded[spec]
        loaded.identity.check_matches(expected)
        return loaded

    def _restore(self, archive: container.Archive) -> Iterator[tuple[ChunkCheck, bytes]]:
        """Yield each chunk's check and bytes, raising ``ChecksumError`` on any mismatch."""
        memory = [c for c in archive.chunks if isinstance(c, container.MemoryChunk)]
        loaded = None
        if memory:
            _check_token_counts(archive)
            template = archive.header.settings.get("template")
            if template != TEMPLATE:
                raise FormatError(f"archive uses prompt template {template!r}; this llmzip decodes {TEMPLATE!r}")
            loaded = self.model_for(archive)
            if archive.header.vector_dim != loaded.identity.hidden_size:  # the identity alone may lie
                raise FormatError(
                    f"archive's vector_dim {archive.header.vector_dim} is not the model's hidden size "
                    f"{loaded.identity.hidden_size}"
                )
        for index, chunk in enumerate(archive.chunks):
            if isinstance(chunk, container.FallbackChunk):  # the container checked its xxh64
                yield ChunkCheck(index, "zstd", chunk.length, None, None), chunk.data
                continue
            vector = torch.frombuffer(bytearray(chunk.vector), dtype=torch.float16)  # (d,)
            piece, margin = _decode_bytes(loaded, vector, chunk.n_tokens)
            if len(piece) != chunk.length or container.checksum(piece) != chunk.xxh64:
                raise ChecksumError(
                    f"chunk {index}: decoded bytes do not match the stored xxh64 "
                    f"(decode margin {margin:.3f}, recorded {chunk.min_margin:.3f})"
                )
            yield ChunkCheck(index, "memory", chunk.length, margin, chunk.min_margin), piece


def compress(data: bytes, **options) -> bytes:
    """One-shot compression; ``options`` are :class:`LmzCompressor`'s."""
    return LmzCompressor(**options).compress(data)


def decompress(data: bytes, **options) -> bytes:
    """One-shot decompression; ``options`` are :class:`LmzDecompressor`'s."""
    return LmzDecompressor(**options).decompress(data)


def journal_path_for(output: str | Path) -> Path:
    """Where compress journals its progress for ``output``: beside it."""
    output = Path(output)
    return output.with_name(output.name + ".journal")


def _check_token_counts(archive: container.Archive) -> None:
    """Refuse, before loading a model, a memory chunk that asks for more tokens than it
    has bytes. Every token of a chunk the writer stores decodes to at least one byte, so
    such a record is corrupt; decoding it anyway would cost up to 65,536 model steps."""
    for index, chunk in enumerate(archive.chunks):
        if isinstance(chunk, container.MemoryChunk) and chunk.n_tokens > chunk.length:
            raise FormatError(f"chunk {index}: n_tokens {chunk.n_tokens} exceeds its length {chunk.length} B")


def _join_checked(archive: container.Archive, pieces: list[bytes]) -> bytes:
    output = b"".join(pieces)
    if len(output) != archive.header.input_size or container.checksum(output) != archive.header.input_xxh64:
        raise ChecksumError("restored input does not match the archive's whole-input xxh64")
    return output


def _decode_bytes(loaded: LoadedModel, vector: torch.Tensor, n_tokens: int) -> tuple[bytes, float]:
    """The one path from a stored vector to bytes: decode() then the tokenizer.
    Returns the bytes and decode's smallest top-1/top-2 logit gap."""
    result = decode(loaded.model, vector, n_tokens)
    return _detokenize(loaded, result.token_ids), result.min_margin


def _detokenize(loaded: LoadedModel, token_ids) -> bytes:
    text = loaded.tokenizer.decode(list(token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return text.encode("utf-8", "surrogatepass")


def _vector_bytes(vector: torch.Tensor) -> bytes:
    """(d,) float16 -> little-endian bytes, as the container stores it."""
    return vector.detach().to("cpu", torch.float16).contiguous().numpy().astype("<f2").tobytes()


def _spec_from_identity(identity: ModelIdentity) -> str:
    if identity.source_kind == "default":
        return DEFAULT_SPEC
    if identity.source_kind == "hub" and identity.source_revision:
        return f"{identity.source_id}@{identity.source_revision}"
    raise ModelError(
        f"archive was made with the {identity.source_kind} model {identity.source_id!r}; "
        f"pass it with --model (or model=...)"
    )


def _torch_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise FormatError(f"archive names an unknown model dtype {name!r}")
    return dtype
