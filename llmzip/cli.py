"""The ``llmzip`` command line.

Exit status: 0 success, 1 an llmzip error (message on stderr, one line), 2 usage error
(click's), 130 interrupted (143 for SIGTERM). Heavy modules (torch, transformers) are
imported inside the commands that need them, so ``llmzip --help`` and ``llmzip info``
start in well under a second.
"""

import contextlib
import dataclasses
import json
import os
import signal
import stat
import sys
import tempfile
import threading
import time

import click

from llmzip import __version__
from llmzip.config import (DEFAULT_CHUNK_TOKENS, DEFAULT_VECTOR_FORM, MAX_CORRECTIONS, OPTIMIZERS, VECTOR_BITS,  # torch-free, like this module
                           TrainConfig)
from llmzip.container import MAX_TOKENS_PER_CHUNK
from llmzip.errors import InputError, LmzError

_TRAIN = TrainConfig()  # the defaults the help texts show


class _Interrupt(BaseException):
    """Ctrl-C or SIGTERM on its way out of a command (``args[0]``: True for SIGTERM).

    Not a KeyboardInterrupt: click's ``main()`` answers one by printing a blank line to
    stderr before re-raising, and llmzip reports an interrupt in exactly one line.
    """


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Interrupt(isinstance(exc, _Terminated)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="llmzip")
def cli():
    """Archive text as memory tokens: one trained LM input vector per chunk.

    Every archive restores its input byte for byte: chunks the model cannot regenerate
    exactly are stored with zstd instead.
    """


@cli.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per file (stable keys).")
def info(files, as_json):
    """Describe archives without loading a model.

    Shows the format version, model identity, archive and input sizes, the ratio (archive
    size / input size, as xz --list reports it), where the stored bytes go, chunks by kind,
    the smallest logit margin and the creation metadata. Every container check runs
    (trailer, header, records, fallback checksums); only `verify` checks that the memory
    vectors regenerate their chunks. A file that fails gets one line on stderr, the
    others are still described, and the exit status is 1.
    """
    from llmzip.container import read_header  # torch-free, like this command

    described = []
    for path in files:
        try:
            described.append((path, read_header(path)))
        except LmzError as exc:
            click.echo(f"llmzip: error: {_show(path)}: {exc}", err=True)
            continue
        if not as_json:
            click.echo(("\n" if len(described) > 1 else "") + _describe(*described[-1]))
    if as_json:
        objects = [{"file": path, **_info_dict(archive)} for path, archive in described]
        click.echo(json.dumps(objects, indent=2, sort_keys=True))
    elif len(described) > 1:
        archive_size = sum(archive.archive_size for _, archive in described)
        input_size = sum(archive.header.input_size for _, archive in described)
        click.echo(
            f"\ntotal: {len(described)} files, archive {archive_size:,} B, input {input_size:,} B, "
            f"ratio {_ratio(archive_size / input_size if input_size else None)}"
        )
    if len(described) < len(files):
        sys.exit(1)


def _describe(path, archive) -> str:
    """The human-readable block `llmzip info` prints for one archive."""
    counts, input_bytes = archive.chunk_counts, archive.input_bytes
    chunks = ", ".join(f"{counts[kind]} {kind} ({input_bytes[kind]:,} B of input)" for kind in counts)
    min_margin = "-" if archive.min_margin is None else f"{archive.min_margin:.6g}"
    vectors = [kind for kind in counts if kind.startswith("memory") and counts[kind]]  # memory kinds, mean stored bits
    lines = [
        _show(path),
        f"  format version  {archive.version[0]}.{archive.version[1]}",
        f"  archive size    {archive.archive_size:,} B",
        f"  input size      {archive.header.input_size:,} B, xxh64 {archive.header.input_xxh64:016x}",
        f"  ratio           {_ratio(archive.ratio)}",
        "  stored bytes    " + ", ".join(f"{kind} {size:,} B" for kind, size in archive.stored_bytes.items())
        + f", overhead {archive.overhead_bytes:,} B",
        f"  chunks          {sum(counts.values())}: {chunks}",
        *(["  bits per vector " + ", ".join(f"{kind} {8 * archive.stored_bytes[kind] / counts[kind]:,.0f}" for kind in vectors)]
          if vectors else []),
        f"  min margin      {min_margin}",
        f"  vector dim      {archive.header.vector_dim}",
    ]
    info = _info_dict(archive)
    for title in ("model", "settings", "metadata"):
        fields = info[title]
        lines.append(f"  {title}")
        width = max((len(_show(key)) for key in fields), default=0)
        lines.extend(f"    {_show(key):<{width}}  {_show(value)}" for key, value in fields.items())
    return "\n".join(lines)


def _info_dict(archive) -> dict:
    """``ArchiveInfo.to_dict()`` with the model identity under its full field names (a
    format 2 header stores one-letter keys); the raw map if it is not a valid identity."""
    from llmzip.identity import recorded_identity

    info = archive.to_dict()
    try:
        info["model"] = recorded_identity(archive.version, archive.header).to_dict()
    except LmzError:
        pass
    return info


def _show(value) -> str:
    """Printable strings as they are, anything else as JSON: a hostile archive's strings
    cannot put control characters (terminal escapes, newlines) on the user's terminal."""
    return value if isinstance(value, str) and value.isprintable() else json.dumps(value)


def _file_name(path) -> str:
    """How messages name a file: as given, "stdin" for -, never raw control characters."""
    return "stdin" if path == "-" else _show(str(path))


def _plural(count: int, noun: str) -> str:
    """"1 chunk", "2 chunks", "0 vectors"."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


class _FileError(InputError):
    """An error about one file; its message is ``FILE: message``, the file named once."""

    def __init__(self, path, message):
        super().__init__(f"{_file_name(path)}: {message}")


@contextlib.contextmanager
def _about(path):
    """Errors raised while working on ``path`` name it, once: ``FILE: message``."""
    try:
        yield
    except _FileError:
        raise
    except LmzError as exc:
        raise _FileError(path, exc) from exc


def _margin(margin: float | None) -> str:
    return "-" if margin is None else f"{margin:.2f}"


def _ratio(ratio) -> str:
    return "-" if ratio is None else f"{ratio:.3f} (archive / input)"


# ---------------------------------------------------------------------------------------
# compress / extract / verify / export


def _verbosity(function):
    """-q/-v/--no-progress, shared by the commands that talk while they work."""
    function = click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")(function)
    function = click.option("-v", "--verbose", is_flag=True, help="More detail on stderr.")(function)
    return click.option("--no-progress", is_flag=True, help="No progress bar (it is hidden anyway when stderr is not a terminal).")(function)


def _setup_logging(quiet: bool, verbose: bool) -> None:
    """llmzip's log messages go to stderr, never stdout (stdout may carry archive bytes)."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("llmzip")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING)


def _show_progress(quiet: bool, no_progress: bool) -> bool:
    return not (quiet or no_progress) and sys.stderr.isatty()


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise _FileError(path, "no such file") from None
    except IsADirectoryError:
        raise _FileError(path, "is a directory") from None
    except OSError as exc:
        raise _FileError(path, f"cannot read: {exc.strerror}") from None


def _source_stat(path: str) -> os.stat_result | None:
    """The input whose permissions and times an output takes, as gzip and zstd do: a
    regular file (not stdin, a pipe or a device), stat'ed before it is read."""
    if path == "-":
        return None
    try:
        status = os.stat(path)
    except OSError:
        return None  # _read_input says why
    return status if stat.S_ISREG(status.st_mode) else None


def _in_place(output: str) -> bool:
    """An existing output that is not a regular file (/dev/null, a FIFO, a device) is
    written in place, as gzip and zstd do: no -f needed, no temporary file, no rename."""
    return os.path.exists(output) and not os.path.isfile(output) and not os.path.isdir(output)


def _probe_directory(directory: str) -> None:
    """Raise OSError unless a file can be created in ``directory`` (os.access cannot
    tell: it says yes to root on a read-only mount and in /proc)."""
    handle, name = tempfile.mkstemp(dir=directory, prefix=".llmzip-probe.", suffix=".tmp")
    os.close(handle)
    os.unlink(name)


def _check_output(output: str | None, force: bool, *, source: str, binary: bool) -> None:
    """Refuse before any work (before a model loads): an existing output without -f, the
    input as output, archive bytes to a terminal, or a directory llmzip cannot write in."""
    if output is None:
        if binary and sys.stdout.isatty():
            raise InputError("refusing to write archive bytes to a terminal; use -o FILE or redirect stdout")
        return
    if source != "-" and os.path.exists(source) and os.path.exists(output) and os.path.samefile(source, output):
        raise _FileError(output, "output would overwrite the input")
    if os.path.isdir(output):
        raise _FileError(output, "is a directory")
    if _in_place(output):
        return
    if os.path.exists(output) and not force:
        raise _FileError(output, "already exists; use -f to overwrite")
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        if os.path.exists(directory):
            raise _FileError(output, f"{_show(directory)} is not a directory")
        raise _FileError(output, f"directory {_show(directory)} does not exist")
    try:
        _probe_directory(directory)
    except OSError as exc:
        raise _FileError(output, f"cannot write in {_show(directory)}: {exc.strerror}") from None


def _write_output(output: str | None, data: bytes, force: bool, *, like: os.stat_result | None = None) -> None:
    """Write to stdout (output None) or atomically to a file: a temporary file in the
    target directory, fsync, rename. A failure leaves no file under the final name.

    A new file gets the permission bits and times of ``like`` (the input, as gzip and
    zstd do), else 0666 minus the umask, as any newly created file.
    """
    if output is None:
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except OSError as exc:  # a full disk or closed pipe behind stdout
            raise InputError(f"stdout: cannot write: {exc.strerror}") from None
        return
    if _in_place(output):
        # A device or pipe (/dev/null, /dev/full, a FIFO) is written in place: renaming a
        # temporary file over it would replace the device node itself.
        try:
            with open(output, "wb") as handle:
                handle.write(data)
        except OSError as exc:
            raise _FileError(output, f"cannot write: {exc.strerror}") from None
        return
    directory = os.path.dirname(os.path.abspath(output))
    try:
        handle = tempfile.NamedTemporaryFile(dir=directory, prefix="." + os.path.basename(output) + ".", suffix=".tmp", delete=False)
    except OSError as exc:
        raise _FileError(output, f"cannot write in {_show(directory)}: {exc.strerror}") from None
    try:
        with handle:
            handle.write(data)
            handle.flush()
            # tempfile creates 0600; the output is an ordinary file (see the docstring).
            os.fchmod(handle.fileno(), stat.S_IMODE(like.st_mode) & 0o777 if like else 0o666 & ~_umask())
            os.fsync(handle.fileno())
        if like is not None:
            os.utime(handle.name, ns=(like.st_atime_ns, like.st_mtime_ns))
        if os.path.exists(output) and not force:  # appeared while we worked
            raise _FileError(output, "already exists; use -f to overwrite")
        os.replace(handle.name, output)
    except OSError as exc:
        raise _FileError(output, f"cannot write: {exc.strerror}") from None
    finally:
        if os.path.exists(handle.name):
            os.unlink(handle.name)
    _fsync_directory(directory)


def _umask() -> int:
    """The process umask (reading it means setting it: set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _jobs(files, output, to_stdout: bool, force: bool, derive, *, binary: bool):
    """(file, target, input stat, input bytes) for each file whose output can be written,
    refused before any model loads; with several files a refused one gets its line on
    stderr and counts as failed (one file: the error itself). Exits 1 if none is left."""
    jobs, failed = [], 0
    for file in files:
        try:
            target = _output_path(file, output, to_stdout, derive)
            _check_output(target, force, source=file, binary=binary)
            jobs.append((file, target, _source_stat(file), _read_input(file)))
        except LmzError as exc:
            if len(files) == 1:
                raise
            click.echo(f"llmzip: error: {exc}", err=True)
            failed += 1
    if not jobs:
        sys.exit(1)
    return jobs, failed


def _output_path(file: str, output: str | None, to_stdout: bool, derive) -> str | None:
    """None means stdout. ``derive(file)`` gives the default output name."""
    if to_stdout and output is not None:
        raise click.UsageError("-c/--stdout and -o/--output cannot be used together", click.get_current_context())
    if to_stdout or output == "-" or (output is None and file == "-"):
        return None
    return output if output is not None else derive(file)


# ---------------------------------------------------------------------------------------
# torch: --device and --threads, shared by compress, extract, verify and bench

_THREADS_HELP = (
    "Torch CPU threads [default: torch's choice: the physical cores, or $OMP_NUM_THREADS]. "
    "On a CPU busy with other jobs use 1: on a 2-core machine running other jobs, two threads "
    "trained 2-3x slower than one (idle, 1.7x faster)."
)


def _threads_option(function):
    return click.option("--threads", type=click.IntRange(1), help=_THREADS_HELP)(function)


def _optimizer_option(function):
    return click.option("--optimizer", type=click.Choice(OPTIMIZERS), help="How vectors are optimised [default: rprop "
                        "for coded vectors with --corrections above 0; adam for the others].")(function)


def _use_torch(device: str, threads: int | None) -> None:
    """What every model command does before its work: refuse a --device this torch cannot
    use, then run the rest of the command with --threads CPU threads (restored when the
    command ends, however it ends)."""
    _check_device(device)
    click.get_current_context().with_resource(_torch_threads(threads))


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """Use ``threads`` torch CPU threads inside the block (None: keep torch's setting),
    then restore the previous count, so that no global setting outlives a command."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_device(device: str) -> None:
    """Refuse, in one line and before any work, a --device this torch build cannot use
    (torch itself would fail later with an AssertionError or a RuntimeError)."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise LmzError(f"--device {device}: not a torch device (cpu, cuda, cuda:1, mps, ...)") from None
    if parsed.type == "cpu":
        return
    if parsed.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            raise LmzError(
                f"--device {device}: this torch ({torch.__version__}) is a CPU-only build; install the "
                f"CUDA build that matches your driver (PyTorch's Get Started page gives the "
                f"command; README, 'Set up and run')"
            )
        if not torch.cuda.is_available():
            raise LmzError(f"--device {device}: torch sees no CUDA device (check the driver and CUDA_VISIBLE_DEVICES)")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise LmzError(f"--device {device}: there {'is' if count == 1 else 'are'} only {_plural(count, 'CUDA device')}")
        return
    try:
        if parsed.type == "meta":
            raise RuntimeError("it holds no data")
        torch.empty(1, device=parsed)
    except Exception as exc:  # noqa: BLE001 - whatever torch says, it says the device is unusable
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LmzError(f"--device {device}: not usable with this torch ({reason})") from None


@cli.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...", type=click.Path(allow_dash=True))
@click.option("-o", "--output", type=click.Path(allow_dash=True), help="Archive path (default FILE.lmz; - for stdout; one FILE only).")
@click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write the archive to stdout (not with -o; one FILE only).")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--model", default="default", show_default=True, help="default, org/name@<commit>, a model directory or a .gguf file.")
@click.option("--device", default="cpu", show_default=True, help="Torch device: cpu, cuda, cuda:1, ...")
@_threads_option
@click.option("--chunk-tokens", type=click.IntRange(1, MAX_TOKENS_PER_CHUNK), help=f"Token budget per chunk [default: per model, {DEFAULT_CHUNK_TOKENS['default']} for the default model].")
@click.option("--max-steps", type=click.IntRange(1), help=f"Optimiser steps per chunk before it falls back to zstd [default: {_TRAIN.max_steps}].")
@click.option("--margin", type=click.FloatRange(0, min_open=True), help=f"Logit margin every position must win by [default: {_TRAIN.margin}].")
@click.option("--batch-size", type=click.IntRange(1), help=f"Chunks trained together [default: {_TRAIN.batch_size}].")
@click.option("--group-batches", type=click.IntRange(1), help="Chunks are trained, journaled and sent to workers in groups of "
              "this many batches; inside a group a finished chunk's slot goes to the next. Smaller groups: finer resume, more "
              f"units for --workers; the archive depends on it [default: {_TRAIN.group_batches}].")
@click.option("--rank", type=click.IntRange(0), help="Coefficients per stored memory vector (kind memory-int-lm up to 8 bits, "
              "memory-int above); 0 stores full fp16 "
              f"vectors (kind memory) [default: per model, {DEFAULT_VECTOR_FORM['default'][0]} for the default model].")
@click.option("--bits", type=click.IntRange(VECTOR_BITS[0], VECTOR_BITS[-1]), help="Bits per memory-int coefficient "
              f"[default: per model, {DEFAULT_VECTOR_FORM['default'][1]} for the default model].")
@click.option("--corrections", type=click.IntRange(0, MAX_CORRECTIONS), help="Positions a coded vector (up to 8 bits) may "
              f"store the right token for instead of missing its chunk [default: {_TRAIN.corrections}; 0: none].")
@click.option("--correction-steps", type=click.IntRange(1), help="A chunk may stop with one correction more per N steps "
              "trained: larger N, more steps and slightly smaller vectors (--corrections 32 --correction-steps 10: ~9x "
              f"the steps for ~3% fewer bytes) [default: {_TRAIN.correction_steps}].")
@click.option("--correction-weight", type=click.FloatRange(0, 1), help="Weight in a chunk's loss of the --corrections "
              "positions it predicts worst (1: the plain mean): below 1 the vector is spent on the positions it can hold "
              f"[default: {_TRAIN.correction_weight}].")
@_optimizer_option
@click.option("--codec", "codec_name", type=click.Choice(["memory", "lm", "auto"]), default="memory", show_default=True,
              help="memory: train memory vectors; lm: LM-code every chunk, no training (1024-token chunks); "
                   "auto: each chunk in its smallest exact kind. memory/auto: chunks without a vector go to "
                   "zstd or lm, the smaller.")
@click.option("--workers", type=click.IntRange(1), help="Train on N Ray workers, each with its own model (one GPU each with --device cuda); "
              "a local Ray instance, or the cluster $RAY_ADDRESS names. Needs pip install \"llmzip[ray]\". --threads defaults to 1.")
@_verbosity
def compress(files, output, to_stdout, force, model, device, threads, chunk_tokens, max_steps, margin, batch_size,
             group_batches, rank, bits, corrections, correction_steps, correction_weight, optimizer, codec_name, workers,
             quiet, verbose, no_progress):
    """Compress each FILE (- for stdin) into an .lmz archive (FILE.lmz).

    Progress is journaled beside the output (OUT.journal), or, when the archive goes to
    stdout or a device, in $XDG_CACHE_HOME/llmzip/journals/ (default ~/.cache). If
    compression is interrupted, running the same command again resumes from the finished
    chunks and gives the same archive. -v adds the model's load time and one line per
    chunk (kind, bytes, tokens, recorded margin). With several files, a file that fails
    gets one line on stderr, the others are still compressed, and the exit status is 1.
    """
    _setup_logging(quiet, verbose)
    if len(files) > 1 and (output is not None or to_stdout or "-" in files):
        raise click.UsageError("-o, -c and - (stdin) take one FILE only", click.get_current_context())
    jobs, failed = _jobs(files, output, to_stdout, force, lambda name: name + ".lmz", binary=True)
    _use_torch(device, 1 if threads is None and workers is not None else threads)
    if workers is not None:
        from llmzip.distributed import import_ray

        import_ray()  # no Ray: say so before the model loads
    from llmzip import codec

    train = _train_config(device, max_steps=max_steps, margin=margin, batch_size=batch_size, group_batches=group_batches,
                          rank=rank, bits=bits, corrections=corrections, correction_steps=correction_steps,
                          correction_weight=correction_weight, optimizer=optimizer)
    began = time.perf_counter()
    compressor = codec.LmzCompressor(model=model, device=device, chunk_tokens=chunk_tokens, train=train,
                                     codec=codec_name)
    if workers is not None:  # after the driver's own load, so a bad --model is its usual error
        compressor.group_runner = _worker_pool(workers, model, device)
    loaded_in = time.perf_counter() - began
    show = dict(quiet=quiet, verbose=verbose, progress=_show_progress(quiet, no_progress) and len(jobs) == 1)
    if len(jobs) == 1:
        _compress_one(compressor, *jobs[0], force, loaded_in, device, **show)
        return
    failed += _compress_many(compressor, jobs, force, loaded_in, device, concurrent=workers is not None, **show)
    if failed:
        sys.exit(1)


def _worker_pool(workers, model, device):
    """A Ray worker pool for --workers, closed when the command ends."""
    import torch

    from llmzip import distributed

    pool = distributed.WorkerPool(workers, model=model, device=device, threads=torch.get_num_threads())
    click.get_current_context().call_on_close(pool.close)
    return pool


def _compress_many(compressor, jobs, force, loaded_in, device, *, concurrent, **show) -> int:
    """Compress each job, one summary (or one error) line per file; the number that
    failed. With workers, the files are compressed at once so that the groups of all of
    them share the workers."""
    interrupted = []

    def one(job):
        try:
            _compress_one(compressor, *job, force, loaded_in, device, **show)
            return 0
        except LmzError as exc:
            if not interrupted:  # after Ctrl-C or SIGTERM, "llmzip: interrupted" says it all
                click.echo(f"llmzip: error: {exc}", err=True)
            return 1

    if not concurrent:
        return sum(one(job) for job in jobs)
    import concurrent.futures

    import torch

    threads = torch.get_num_threads()  # each thread of the pool sets it (OpenMP's count is per thread)

    def in_thread(job):
        torch.set_num_threads(threads)
        return one(job)

    executor = concurrent.futures.ThreadPoolExecutor(max_workers=min(len(jobs), 8))
    try:
        return sum(executor.map(in_thread, jobs))
    except BaseException:  # Ctrl-C, SIGTERM: wake the threads waiting on workers
        interrupted.append(True)
        compressor.group_runner.close()
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _compress_one(compressor, file, target, like, data, force, loaded_in, device, *, quiet, verbose, progress):
    journal = _journal_path(target, data, compressor)
    with _about(file), _Progress(enabled=progress) as bar:
        archive, report = compressor.compress_with_report(
            data, journal_path=journal, on_step=bar.step, on_chunk=bar.chunk,
            on_verify=bar.decoding("verifying"),
        )
    _write_output(target, archive, force, like=like)
    if journal is not None:
        journal.unlink(missing_ok=True)
    if not quiet:
        resumed = f", {report.resumed_chunks} resumed from journal" if report.resumed_chunks else ""
        click.echo(
            f"llmzip: {_file_name(file)} -> {_file_name(target) if target else '(stdout)'}: "
            f"{_plural(report.chunks, 'chunk')} ({_plural(report.memory_chunks, 'vector')}, "
            f"{f'{report.lm_chunks} lm, ' if report.lm_chunks else ''}{report.fallback_chunks} zstd{resumed}), "
            f"{report.input_size:,} B -> {report.archive_size:,} B, {report.seconds:.1f} s",
            err=True,
        )
    if verbose and not quiet:
        import torch

        identity = compressor.loaded.identity
        click.echo(f"  model {_show(identity.source_id)} on {device}, {_plural(torch.get_num_threads(), 'thread')}, "
                   f"loaded in {loaded_in:.1f} s", err=True)
        for line in _chunk_lines(archive):
            click.echo(line, err=True)


def _journal_path(target: str | None, data: bytes, compressor):
    """Where compress journals: beside a file output (OUT.journal); for stdout or a
    device, in the user cache, named by the input's checksum and the settings and model
    (a rerun of the same command finds it). None, with a warning, if the cache cannot be
    written: the run works, but an interrupt loses its progress."""
    from llmzip import codec
    from llmzip.model import cache_root

    if target is not None and not _in_place(target):
        return codec.journal_path_for(target)
    import xxhash

    key = json.dumps({"settings": compressor.settings(), "model": compressor.loaded.identity.to_dict()}, sort_keys=True)
    directory = cache_root() / "journals"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _probe_directory(str(directory))
    except OSError as exc:
        import logging

        logging.getLogger(__name__).warning(
            "llmzip: cannot journal in %s (%s); an interrupted run will start over", directory, exc.strerror
        )
        return None
    return directory / f"{xxhash.xxh64(data).hexdigest()}-{xxhash.xxh64(key.encode()).hexdigest()}.journal"


def _chunk_lines(archive: bytes) -> list[str]:
    """One line per chunk of an archive, for -v: index, kind, bytes, and for memory
    vectors the token count and the margin recorded at compress time."""
    from llmzip import container, kinds

    lines = []
    for index, chunk in enumerate(container.unpack(archive).chunks):
        kind, detail = kinds.of(chunk), ""
        if getattr(chunk, "n_tokens", None) is not None:
            detail += f"  {_plural(chunk.n_tokens, 'token')}"
        if kind.margin(chunk) is not None:
            detail += f"  margin {kind.margin(chunk):.3f}"
        if kind.stored_bytes(chunk):
            detail += f"  stored {kind.stored_bytes(chunk):,} B"
        corrected = getattr(chunk, "corrections", None) or getattr(chunk, "positions", None)  # kinds 5 and 6
        if corrected:
            detail += f"  {_plural(len(corrected), 'correction')}"
        lines.append(f"  chunk {index:>5}  {kind.name:<16} {chunk.length:>7} B{detail}")
    return lines


def _train_config(device: str, **options):
    """A TrainConfig with the options the user gave (None = the documented default)."""
    return TrainConfig(**{name: value for name, value in options.items() if value is not None}, device=device)


class _Progress:
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

    def decoding(self, phase: str):
        """A ``(done, total)`` callback for decoded tokens, drawn as ``phase``."""
        return lambda done, total: self._update(phase, "token", done, total)

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


@cli.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE.lmz...", type=click.Path(allow_dash=True))
@click.option("-o", "--output", type=click.Path(allow_dash=True), help="Output path (default FILE without .lmz; - for stdout; one FILE only).")
@click.option("-c", "--stdout", "to_stdout", is_flag=True, help="Write to stdout (not with -o; one FILE only).")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--model", default=None, help="Model spec [default: the one the archive names].")
@click.option("--device", default="cpu", show_default=True, help="Torch device.")
@_threads_option
@_verbosity
def extract(files, output, to_stdout, force, model, device, threads, quiet, verbose, no_progress):
    """Restore the exact input from each FILE.lmz.

    Nothing is written unless the model matches the archive's and every chunk and the
    whole output pass their checksums. The output takes the archive's permissions and
    modification time, as gunzip does. -v adds one line per chunk (kind, bytes, tokens,
    recorded margin; `verify -v` shows the margins decoding measured). With several files,
    a file that fails gets one line on stderr, the others are still extracted, and the
    exit status is 1.
    """
    _setup_logging(quiet, verbose)
    if len(files) > 1 and (output is not None or to_stdout or "-" in files):
        raise click.UsageError("-o, -c and - (stdin) take one FILE only", click.get_current_context())
    jobs, failed = _jobs(files, output, to_stdout, force, _strip_lmz, binary=False)
    _use_torch(device, threads)

    from llmzip import codec

    decompressor = codec.LmzDecompressor(model=model, device=device)  # keeps each model it loads
    for job in jobs:
        try:
            _extract_one(decompressor, *job, force, quiet=quiet, verbose=verbose, progress=_show_progress(quiet, no_progress))
        except LmzError as exc:
            if len(files) == 1:
                raise
            click.echo(f"llmzip: error: {exc}", err=True)
            failed += 1
    if failed:
        sys.exit(1)


def _extract_one(decompressor, file, target, like, archive, force, *, quiet, verbose, progress):
    began = time.perf_counter()
    with _about(file), _Progress(enabled=progress) as bar:
        data = decompressor.decompress(archive, on_progress=bar.decoding("decoding"))
    seconds = time.perf_counter() - began
    _write_output(target, data, force, like=like)
    if not quiet:
        lines = _chunk_lines(archive)
        click.echo(f"llmzip: {_file_name(file)} -> {_file_name(target) if target else '(stdout)'}: "
                   f"{_plural(len(lines), 'chunk')}, {len(archive):,} B -> {len(data):,} B, {seconds:.1f} s", err=True)
        if verbose:
            for line in lines:
                click.echo(line, err=True)


def _strip_lmz(name: str) -> str:
    if not name.endswith(".lmz") or name == ".lmz":
        raise _FileError(name, "does not end in .lmz; name the output with -o")
    return name[: -len(".lmz")]


@cli.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE.lmz...", type=click.Path())
@click.option("--model", default=None, help="Model spec [default: the one each archive names].")
@click.option("--device", default="cpu", show_default=True, help="Torch device.")
@_threads_option
@_verbosity
def verify(files, model, device, threads, quiet, verbose, no_progress):
    """Decode every chunk and check every checksum; write nothing.

    Exit 0 only if every archive passes.
    """
    _setup_logging(quiet, verbose)
    _use_torch(device, threads)
    from llmzip import codec

    decompressor = codec.LmzDecompressor(model=model, device=device)
    failed = 0
    for path in files:
        try:
            with _about(path), _Progress(enabled=_show_progress(quiet, no_progress)) as progress:
                checks = decompressor.verify(_read_input(path), on_progress=progress.decoding("decoding"))
        except LmzError as exc:
            click.echo(f"llmzip: error: {exc}", err=True)
            failed += 1
            continue
        counts: dict[str, int] = {}
        for check in checks:
            counts[check.kind] = counts.get(check.kind, 0) + 1
        margins = [c.decode_margin for c in checks if c.decode_margin is not None]
        margin = f", min decode margin {min(margins):.3f}" if margins else ""
        by_kind = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        if not quiet:
            click.echo(f"{_show(path)}: OK ({_plural(len(checks), 'chunk')}: {by_kind}{margin})")
        if verbose:
            for c in checks:
                detail = "" if c.decode_margin is None else f"decode margin {c.decode_margin:.3f} (recorded {c.recorded_margin:.3f})"
                click.echo(f"  chunk {c.index:>5}  {c.kind:<6} {c.length:>7} B  {detail}".rstrip())
    if failed:
        sys.exit(1)


@cli.command()
@click.argument("file", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="The .safetensors file to write.")
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output.")
def export(file, output, force):
    """Write the memory vectors of FILE.lmz as safetensors, for use as soft prompts.

    Tensor "vectors" is (N, d) float16, one row per memory chunk in input order. The
    metadata holds, as JSON strings: "llmzip.chunks" (per row: chunk index, byte offset,
    length, token count, recorded margin), "llmzip.model" (the model identity) and
    "llmzip.settings". format/CODEC.md says how to decode a row. No model is loaded.
    """
    _check_output(output, force, source=file, binary=True)
    from llmzip import codec

    with _about(file):
        exported = codec.export(_read_input(file))
    _write_output(output, exported, force)


@cli.command()
@click.argument("corpus", type=click.Path())
@click.option("--rows", type=click.IntRange(1), default=20, show_default=True, help="Use ROWS data rows.")
@click.option("--start", type=click.IntRange(0), default=0, show_default=True, help="First data row to use (0-based), to run a corpus in slices.")
@click.option("--column", default="chunk", show_default=True, help="CSV column holding the text.")
@click.option("--model", default="default", show_default=True, help="default, org/name@<commit>, a model directory or a .gguf file.")
@click.option("--device", default="cpu", show_default=True, help="Torch device: cpu, cuda, cuda:1, ...")
@click.option("--max-steps", type=click.IntRange(1), help=f"Optimiser steps per row [default: {_TRAIN.max_steps}].")
@click.option("--margin", type=click.FloatRange(0, min_open=True), help=f"Logit margin every position must win by [default: {_TRAIN.margin}].")
@click.option("--batch-size", type=click.IntRange(1), help=f"Rows trained together [default: {_TRAIN.batch_size}].")
@_optimizer_option
@click.option("--lr", type=click.FloatRange(0, min_open=True), help=f"With --optimizer adam: step size in embedding-RMS units [default: {_TRAIN.lr}].")
@_threads_option
@click.option("--capacity", is_flag=True, help="For rows not stored, bisect the longest token prefix one vector holds.")
@click.option("--probes", type=click.IntRange(1), default=3, show_default=True, help="Prefix lengths tried per row in each capacity round (1 = plain bisection).")
@click.option("--resolution", type=click.IntRange(1), default=2, show_default=True, help="Capacity bisection stops at this many tokens.")
@click.option("--json", "json_path", type=click.Path(), help="Write every measurement here as JSON.")
@click.option("--plot", "plot_path", type=click.Path(), help="Write a PNG of accuracy against row length here.")
@click.option("-f", "--force", is_flag=True, help="Overwrite existing --json/--plot files.")
@_verbosity
def bench(corpus, rows, start, column, model, device, max_steps, margin, batch_size, optimizer, lr, threads, capacity, probes, resolution,
          json_path, plot_path, force, quiet, verbose, no_progress):
    """Reproduce the memory-token paper's measurements on CORPUS, a CSV with a text column.

    Trains one vector per row (each row whole, as the paper does) and prints the paper's
    table: mean teacher-forced token accuracy ("Avg. Acc") and rows regenerated exactly
    by greedy decoding ("Reconstructed"), plus how many llmzip would store (exact and
    within its margin), steps and seconds. Per-row results go to stderr as they finish.
    """
    _setup_logging(quiet, verbose)
    for path in (json_path, plot_path):
        if path is not None:
            _check_output(path, force, source=corpus, binary=False)
    from llmzip import bench as measure

    texts = measure.read_corpus(corpus, rows=rows, column=column, start=start)
    if plot_path is not None:
        measure.check_plotting()

    _use_torch(device, threads)
    from llmzip.model import load_model
    from llmzip.train import configured_start

    config = _train_config(device, max_steps=max_steps, margin=margin, batch_size=batch_size, optimizer=optimizer, lr=lr)
    loaded = load_model(model, device=device)
    start_vector = configured_start(config, loaded.identity.weights_fingerprint)

    def row_done(result):
        if not quiet:
            click.echo(f"llmzip bench: row {result.row}: {result.tokens} tokens, {result.steps} steps, "
                       f"acc {result.token_accuracy:.3f}, reconstructed {'yes' if result.reconstructed else 'no'}, "
                       f"decode margin {_margin(result.decode_min_margin)}, {result.seconds:.0f} s", err=True)

    began = time.perf_counter()
    with _Progress(enabled=_show_progress(quiet, no_progress)) as progress:
        results = measure.run(loaded.model, loaded.tokenizer, texts, config, first_row=start,
                              on_row=row_done, on_step=progress.step, start=start_vector)
    summary = measure.summarise(results, time.perf_counter() - began)
    name = loaded.identity.source_id if model != "default" else "Gemma 3 270M (default)"
    click.echo(measure.paper_table(summary, name))
    click.echo("\n" + measure.rows_table(results))
    capacities = []
    if capacity:
        failed = [(r.row, ids) for r, ids in zip(results, measure.tokenize(loaded.tokenizer, texts)) if not r.stored]

        def round_done(number, found):
            if not quiet:
                intervals = ", ".join(f"row {c.row}: {c.longest_stored}-{c.shortest_failed}" for c in found)
                click.echo(f"llmzip bench: capacity round {number}: stored-failed {intervals}", err=True)

        capacities = measure.capacity(loaded.model, failed, config, probes=probes, resolution=resolution, on_round=round_done,
                                       start=start_vector)
    for c in capacities:
        click.echo(f"capacity: row {c.row} ({c.row_tokens} tokens): longest stored prefix {c.longest_stored} tokens, "
                   f"shortest failed {c.shortest_failed} (trials: "
                   + ", ".join(f"{t.tokens}{'+' if t.stored else '-'}" for t in c.trials) + ")")
    if json_path is not None:
        document = measure.report(results, summary, capacities, corpus=os.path.basename(corpus), column=column, start=start,
                                  model=loaded.identity.to_dict(), config=dataclasses.asdict(config), machine=measure.machine())
        _write_output(json_path, (json.dumps(document, indent=1, sort_keys=True) + "\n").encode(), force)
    if plot_path is not None:
        title = f"{os.path.basename(corpus)}, rows {start}-{start + len(results) - 1}, {name}"
        _write_output(plot_path, measure.plot(results, title=title), force)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that ``finally`` blocks remove temporary files."""


def _raise_terminated(signum, frame):
    raise _Terminated


def main(argv=None):
    """Console entry point: run the click group and map errors to exit codes.

    SIGTERM is handled like SIGINT while a command runs (Python's default would end the
    process without cleanup, leaving a temporary output file behind); it exits 143.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        _run(argv)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(argv):
    try:
        # standalone_mode=False: errors come here to be mapped; ctx.exit(n) comes back as n.
        status = cli.main(args=argv, prog_name="llmzip", standalone_mode=False)
    except (_Interrupt, click.exceptions.Abort, KeyboardInterrupt) as exc:  # click wraps Ctrl-C in Abort
        terminated = exc.args[0] if isinstance(exc, _Interrupt) else isinstance(exc.__cause__ or exc, _Terminated)
        # On a terminal, \r puts the message over the ^C the terminal echoed.
        click.echo(("\r" if sys.stderr.isatty() else "") + ("llmzip: terminated" if terminated else "llmzip: interrupted"),
                   err=True)
        sys.exit(128 + signal.SIGTERM if terminated else 130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except LmzError as exc:
        click.echo(f"llmzip: error: {exc}", err=True)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
