"""``llmzip extract`` (gzip's -d) and ``llmzip verify`` (gzip's -t): decode archives with
the model they name, every checksum checked."""

import sys
import time

import click

from llmzip import container
from llmzip.cli import files as io
from llmzip.cli.group import cli
from llmzip.cli.messages import Progress, about, arrow, chunk_lines, each, plural, setup_logging, show, show_progress
from llmzip.cli.options import (files_argument, model_option, output_options, torch_options, use_workers, verbosity,
                                worker_pool, workers_option)
from llmzip.errors import LmzError


@cli.command()
@files_argument("FILE.lmz...")
@output_options("FILE without .lmz")
@model_option(from_archive=True)
@torch_options
@workers_option("Decode")
@verbosity
def extract(files, recursive, output, to_stdout, force, keep, model, device, threads, workers, quiet, verbose,
            no_progress):
    """Restore the exact input from each FILE.lmz (also: llmzip -d, llmzip decompress).

    Nothing is written unless the model matches the archive's and every chunk and the
    whole output pass their checksums. The output takes the archive's permissions and
    modification time, as gunzip does. -v adds one line per chunk (kind, bytes, tokens,
    recorded margin; `verify -v` shows the margins decoding measured). With several files,
    a file that fails gets one line on stderr, the others are still extracted, and the
    exit status is 1.
    """
    setup_logging(quiet, verbose)
    files = io.expand(files, recursive, archives=True)
    if not files:
        return
    io.one_file_only(files, output, to_stdout)
    jobs, failed = io.jobs(files, output, to_stdout, force, io.strip_suffix, binary=None)
    decompressor = _decompressor(model, device, threads, workers)
    progress = show_progress(quiet, no_progress)
    failed += each(jobs, lambda job: _extract_one(decompressor, *job, force, quiet=quiet, verbose=verbose, progress=progress))
    if failed:
        sys.exit(1)


def _extract_one(decompressor, file, target, like, archive, force, *, quiet, verbose, progress):
    began = time.perf_counter()
    with about(file), Progress(enabled=progress) as bar:
        data = decompressor.decompress(archive, on_progress=bar.decoding("decoding", _input_size(archive, progress)))
    seconds = time.perf_counter() - began
    io.write_output(target, data, force, like=like)
    if not quiet:
        lines = chunk_lines(archive)
        click.echo(f"llmzip: {arrow(file, target)}: "
                   f"{plural(len(lines), 'chunk')}, {len(archive):,} B -> {len(data):,} B, {seconds:.1f} s", err=True)
        if verbose:
            for line in lines:
                click.echo(line, err=True)


@cli.command()
@files_argument("FILE.lmz...")
@model_option(from_archive=True)
@torch_options
@workers_option("Decode")
@verbosity
def verify(files, recursive, model, device, threads, workers, quiet, verbose, no_progress):
    """Decode every chunk and check every checksum; write nothing (also: llmzip -t).

    Exit 0 only if every archive passes.
    """
    setup_logging(quiet, verbose)
    files = io.expand(files, recursive, archives=True)
    if not files:
        return
    decompressor = _decompressor(model, device, threads, workers)
    progress = show_progress(quiet, no_progress)
    if each(files, lambda path: _verify_one(decompressor, path, quiet=quiet, verbose=verbose, progress=progress)):
        sys.exit(1)


def _verify_one(decompressor, path, *, quiet, verbose, progress):
    with about(path), Progress(enabled=progress) as bar:
        archive = io.read_input(path)
        checks = decompressor.verify(archive, on_progress=bar.decoding("decoding", _input_size(archive, progress)))
    counts: dict[str, int] = {}
    for check in checks:
        counts[check.kind] = counts.get(check.kind, 0) + 1
    margins = [c.decode_margin for c in checks if c.decode_margin is not None]
    margin = f", min decode margin {min(margins):.3f}" if margins else ""
    by_kind = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    if not quiet:
        click.echo(f"{show(path)}: OK ({plural(len(checks), 'chunk')}: {by_kind}{margin})")
    if verbose:
        for c in checks:
            detail = "" if c.decode_margin is None else f"decode margin {c.decode_margin:.3f} (recorded {c.recorded_margin:.3f})"
            click.echo(f"  chunk {c.index:>5}  {c.kind:<6} {c.length:>7} B  {detail}".rstrip())


def _decompressor(model, device, threads, workers):
    """The command's decompressor (it keeps each model it loads), decoding on ``workers``
    Ray workers when given; closed when the command ends."""
    threads = use_workers(workers, device, threads)
    from llmzip import codec

    def runner_for(spec, load):
        return worker_pool(workers, spec, device, load)

    decompressor = codec.LmzDecompressor(model=model, device=device, threads=threads,
                                         runner_for=runner_for if workers is not None else None)
    click.get_current_context().call_on_close(decompressor.close)
    return decompressor


def _input_size(archive: bytes, progress: bool) -> int | None:
    """The input size the archive records, for the progress bar's bytes/s: None without a
    bar (reading the header costs a parse of its own), or where the header does not parse
    (decompress then says why)."""
    if not progress:
        return None
    try:
        return container.read_header(archive).header.input_size
    except LmzError:
        return None
