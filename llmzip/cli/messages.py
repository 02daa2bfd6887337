"""What the commands say: how a message names a file and counts things, one line per
failed file, log messages and progress bars on stderr (stdout may carry archive bytes)."""

import contextlib
import json
import sys

import click

from llmzip.errors import InputError, LmzError


def show(value) -> str:
    """Printable strings as they are, anything else as JSON: a hostile archive's strings
    cannot put control characters (terminal escapes, newlines) on the user's terminal."""
    return value if isinstance(value, str) and value.isprintable() else json.dumps(value)


def file_name(path) -> str:
    """How messages name a file: as given, "stdin" for -, never raw control characters."""
    return "stdin" if path == "-" else show(str(path))


def arrow(file, target) -> str:
    """"doc.txt -> doc.txt.lmz" for a summary line; a target of None is stdout."""
    return f"{file_name(file)} -> {file_name(target) if target else '(stdout)'}"


def plural(count: int, noun: str) -> str:
    """"1 chunk", "2 chunks", "0 vectors"."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def margin(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def ratio(value) -> str:
    return "-" if value is None else f"{value:.3f} (archive / input)"


def holds_vector(kind_name: str) -> bool:
    """Whether chunks of this kind are memory vectors (memory, memory-int, ...): the
    compress summary counts them as vectors, info says their bits per vector."""
    from llmzip import kinds
    from llmzip.kinds.memory import MemoryKind

    try:
        return isinstance(kinds.by_name(kind_name), MemoryKind)
    except KeyError:  # a kind of a newer format ("kind 9"), which info still counts
        return False


def chunk_summary(counts: dict, *more: str) -> str:
    """"3 chunks (2 vectors, 1 zstd)" from an archive's chunks by kind
    (``ArchiveInfo.chunk_counts``: what `info` counts), then ``more`` in the parentheses."""
    vectors = sum(count for kind, count in counts.items() if holds_vector(kind))
    others = [f"{count:,} {kind}" for kind, count in counts.items() if count and not holds_vector(kind)]
    return f"{plural(sum(counts.values()), 'chunk')} ({', '.join([plural(vectors, 'vector'), *others, *more])})"


def standalone_line(standalone: int, vectors: int, held: int, input_size: int) -> str:
    """"2 of 3 vectors regenerate their chunk alone, 512 B (24 %) of the input": how many
    memory vectors are memory tokens (the others lean on corrected tokens: hybrids)."""
    share = f" ({100 * held / input_size:.0f} %)" if input_size else ""
    return f"{standalone:,} of {plural(vectors, 'vector')} regenerate their chunk alone, {held:,} B{share} of the input"


def chunk_lines(archive: bytes) -> list[str]:
    """One line per chunk of an archive, for -v: index, kind, bytes, and for memory
    vectors the token count and the margin recorded at compress time."""
    from llmzip import container, kinds

    lines = []
    for index, chunk in enumerate(container.unpack(archive).chunks):
        row, detail = kinds.of(chunk).describe(chunk), ""
        if row["tokens"] is not None:
            detail += f"  {plural(row['tokens'], 'token')}"
        if row["margin"] is not None:
            detail += f"  margin {row['margin']:.3f}"
        if row["stored_bytes"]:
            detail += f"  stored {row['stored_bytes']:,} B"
        if row["corrections"]:
            detail += f"  {plural(row['corrections'], 'correction')} (hybrid: not a vector alone)"
        elif row["standalone"]:
            detail += "  standalone"
        lines.append(f"  chunk {index:>5}  {row['kind']:<16} {row['length']:>7} B{detail}")
    return lines


class FileError(InputError):
    """An error about one file; its message is ``FILE: message``, the file named once."""

    def __init__(self, path, message):
        super().__init__(f"{file_name(path)}: {message}")


@contextlib.contextmanager
def about(path):
    """Errors raised while working on ``path`` name it, once: ``FILE: message``."""
    try:
        yield
    except FileError:
        raise
    except LmzError as exc:
        raise FileError(path, exc) from exc


def error(exc: LmzError) -> None:
    click.echo(f"llmzip: error: {exc}", err=True)


def each(items, work) -> int:
    """``work(item)`` for each item; an llmzip error is one line on stderr and the others
    are still done, as gzip does. Returns how many failed."""
    failed = 0
    for item in items:
        try:
            work(item)
        except LmzError as exc:
            error(exc)
            failed += 1
    return failed


def setup_logging(quiet: bool, verbose: bool) -> None:
    """llmzip's log messages go to stderr, never stdout (stdout may carry archive bytes)."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("llmzip")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING)


def show_progress(quiet: bool, no_progress: bool) -> bool:
    return not (quiet or no_progress) and sys.stderr.isatty()


class Progress:
    """tqdm bars on stderr, one per phase (training: chunks, current step and loss;
    decoding: tokens), with ETA. Nothing when disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.phase = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if self.bar is not None:
            if exc_type is not None:  # an error or interrupt: clear the bar, leave its line to the message
                self.bar.leave = False
            self.bar.close()

    def chunk(self, done: int, total: int) -> None:
        """Training: ``done`` of ``total`` chunks."""
        self._update("training", "chunk", done, total)

    def step(self, step: int, active: int, loss: float) -> None:
        if self.enabled:
            self._open("training", "chunk", None)
            self.bar.set_postfix_str(f"step {step}, {active} in batch, loss {loss:.3f}", refresh=False)
            self.bar.refresh()

    def decoding(self, phase: str, size: int | None = None):
        """A ``(done, total)`` callback for tokens decoded or coded, drawn as ``phase``;
        with ``size``, the input bytes those tokens spell, the bar also shows bytes/s."""

        def update(done: int, total: int) -> None:
            self._update(phase, "token", done, total)
            if self.enabled and size and total and self.bar.format_dict["elapsed"] > 0:
                rate = size * done / total / self.bar.format_dict["elapsed"]
                self.bar.set_postfix_str(f"{rate:,.0f} B/s", refresh=False)

        return update

    def _update(self, phase: str, unit: str, done: int, total) -> None:
        if self.enabled:
            self._open(phase, unit, total)
            self.bar.total = total
            self.bar.update(done - self.bar.n)

    def _open(self, phase: str, unit: str, total) -> None:
        if self.phase == phase:
            return
        from tqdm import tqdm

        if self.bar is not None:
            self.bar.close()
        self.phase = phase
        self.bar = tqdm(total=total, unit=unit, desc=phase, file=sys.stderr, dynamic_ncols=True)
