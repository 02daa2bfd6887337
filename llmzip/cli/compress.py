"""``llmzip compress``: one model load, then each file trained, journaled, packed and
written, one summary line per file."""

import json
import sys
import time

import click

from llmzip.cli import files as io
from llmzip.cli.group import cli
from llmzip.cli.messages import (Progress, about, arrow, chunk_lines, chunk_summary, each, error, plural,
                                 setup_logging, show, show_progress)
from llmzip.cli.options import (files_argument, model_option, optimizer_option,
                                options, output_options, torch_options, train_config, train_option, training_options,
                                use_torch, verbosity)
from llmzip.config import CODECS, DEFAULT_CHUNK_TOKENS, DEFAULT_CODEC, DEFAULT_MODEL, DEFAULT_VECTOR_FORM
from llmzip.errors import LmzError
from llmzip.kinds.lm import LM_CHUNK_TOKENS
from llmzip.wire import MAX_CORRECTIONS, MAX_TOKENS_PER_CHUNK, VECTOR_BITS

_RANK, _BITS = DEFAULT_VECTOR_FORM[DEFAULT_MODEL]

vector_options = options(  # how each vector is trained and stored: TrainConfig fields
    train_option("group-batches", click.IntRange(1), "Chunks are trained, journaled and sent to workers in groups of "
                 "this many batches; inside a group a finished chunk's slot goes to the next. Smaller groups: finer "
                 "resume, more units for --workers; the archive depends on it"),
    train_option("rank", click.IntRange(0), "Coefficients per stored memory vector (kind memory-int-lm up to 8 bits, "
                 "memory-int above); 0 stores full fp16 vectors (kind memory)",
                 default=f"per model, {_RANK} for the default model"),
    train_option("bits", click.IntRange(VECTOR_BITS[0], VECTOR_BITS[-1]), "Bits per memory-int coefficient",
                 default=f"per model, {_BITS} for the default model"),
    train_option("grid", click.FloatRange(0), "Coded vectors (up to 8 bits): one fixed quantiser step for every "
                 "vector; 0: each vector's grid scaled to its own RMS, the form that holds chunks alone"),
    train_option("sparsity", click.FloatRange(0), "With --grid: weight of a pull towards the start vector that leaves "
                 "coordinates at 0 (smaller vectors, fewer chunks held alone; --corrections 40 --grid 6 --sparsity 1.25 "
                 "is the compact hybrid of BENCHMARKS.md)"),
    train_option("corrections", click.IntRange(0, MAX_CORRECTIONS), "Hybrid vectors: positions a coded vector (up "
                 "to 8 bits) may store the right token for instead of missing its chunk. Such a vector alone does not "
                 "regenerate its chunk; 0: every vector a memory token"),
    train_option("correction-steps", click.IntRange(1), "A chunk may stop with one correction more per N steps "
                 "trained: larger N, more steps and slightly smaller vectors (--corrections 32 --correction-steps 10: "
                 "~9x the steps for ~3% fewer bytes)"),
    train_option("correction-weight", click.FloatRange(0, 1), "Weight in a chunk's loss of the --corrections "
                 "positions it predicts worst (1: the plain mean): below 1 the vector is spent on the positions it can "
                 "hold"),
    optimizer_option,
)


@cli.command()
@files_argument("FILE...")
@output_options("FILE.lmz")
@click.option("-n", "--no-name", is_flag=True, help="Accepted for gzip users: an archive never holds the input's file name or time.")
@model_option(from_archive=False)
@torch_options
@click.option("--chunk-tokens", type=click.IntRange(1, MAX_TOKENS_PER_CHUNK),
              help=f"Token budget per chunk [default: per model, {DEFAULT_CHUNK_TOKENS[DEFAULT_MODEL]} for the default "
                   f"model; {LM_CHUNK_TOKENS} with --codec lm].")
@training_options("chunk", steps_text=" before it is stored another way (lm, zstd)")
@vector_options
@click.option("--codec", "codec_name", type=click.Choice(CODECS), default=DEFAULT_CODEC, show_default=True,
              help=f"For embeddings, memory: a vector per chunk that regenerates it alone, other chunks in their "
                   f"smallest exact form. For size, lm: LM-code each chunk where smaller than zstd, no training "
                   f"({LM_CHUNK_TOKENS}-token chunks); auto: the smallest of its own choice, memory's and lm's.")
@click.option("--workers", type=click.IntRange(1), help="Train on N Ray workers, each with its own model (one GPU each with --device cuda); "
              "a local Ray instance, or the cluster $RAY_ADDRESS names. Needs pip install \"llmzip[ray]\". --threads defaults to 1.")
@verbosity
def compress(files, recursive, output, to_stdout, force, keep, no_name, model, device, threads, chunk_tokens, codec_name,
             workers, quiet, verbose, no_progress, **train):
    """Compress each FILE (- for stdin) into an .lmz archive (FILE.lmz).

    Progress is journaled beside the output (OUT.journal), or, when the archive goes to
    stdout or a device, in $XDG_CACHE_HOME/llmzip/journals/ (default ~/.cache). If
    compression is interrupted, running the same command again resumes from the finished
    chunks and gives the same archive. -v adds the model's load time and one line per
    chunk (kind, bytes, tokens, recorded margin). A FILE that already ends in .lmz is
    left alone unless -f. With several files, a file that fails gets one line on stderr,
    the others are still compressed, and the exit status is 1.
    """
    setup_logging(quiet, verbose)
    files = io.expand(files, recursive, archives=False)
    if not files:
        return
    io.one_file_only(files, output, to_stdout)
    jobs, failed = io.jobs(files, output, to_stdout, force, io.add_suffix(force), binary="archive bytes")
    threads = 1 if threads is None and workers is not None else threads
    use_torch(device, threads)
    if workers is not None:
        from llmzip.distributed import import_ray

        import_ray()  # no Ray: say so before the model loads
    from llmzip import codec

    began = time.perf_counter()
    compressor = codec.LmzCompressor(model=model, device=device, threads=threads, chunk_tokens=chunk_tokens,
                                     train=train_config(device, **train), codec=codec_name)
    if workers is not None:  # after the driver's own load, so a bad --model is its usual error
        compressor.group_runner = _worker_pool(workers, model, device)
    loaded_in = time.perf_counter() - began
    talk = dict(quiet=quiet, verbose=verbose, progress=show_progress(quiet, no_progress) and len(jobs) == 1)
    failed += _compress_many(compressor, jobs, force, loaded_in, device, concurrent=workers is not None, **talk)
    if failed:
        sys.exit(1)


def _worker_pool(workers, model, device):
    """A Ray worker pool for --workers, closed when the command ends."""
    import torch

    from llmzip import distributed

    pool = distributed.WorkerPool(workers, model=model, device=device, threads=torch.get_num_threads())
    click.get_current_context().call_on_close(pool.close)
    return pool


def _compress_many(compressor, jobs, force, loaded_in, device, *, concurrent, **talk) -> int:
    """Compress each job, one summary (or one error) line per file; the number that
    failed. With workers, the files are compressed at once so that the groups of all of
    them share the workers."""

    def one(job):
        _compress_one(compressor, *job, force, loaded_in, device, **talk)

    if not concurrent:
        return each(jobs, one)
    import concurrent.futures

    import torch

    threads = torch.get_num_threads()  # each thread of the pool sets it (OpenMP's count is per thread)
    interrupted = []

    def in_thread(job):
        torch.set_num_threads(threads)
        try:
            one(job)
            return 0
        except LmzError as exc:
            if not interrupted:  # after Ctrl-C or SIGTERM, "llmzip: interrupted" says it all
                error(exc)
            return 1

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
    with about(file), Progress(enabled=progress) as bar:
        archive, report = compressor.compress_with_report(
            data, journal_path=journal, on_step=bar.step, on_chunk=bar.chunk,
            on_verify=bar.decoding("verifying"),
            on_code=bar.decoding("LM coding", len(data)),
        )
    io.write_output(target, archive, force, like=like)
    if journal is not None:
        journal.unlink(missing_ok=True)
    if not quiet:
        alone = []
        if report.memory_chunks:  # how many vectors are memory tokens, and their share of the input
            share = f", {100 * report.standalone_bytes / report.input_size:.0f} % of the input" if report.input_size else ""
            alone = [f"{report.standalone_chunks} standalone{share}"]
        resumed = [f"{report.resumed_chunks} resumed from journal"] if report.resumed_chunks else []
        click.echo(
            f"llmzip: {arrow(file, target)}: "
            f"{chunk_summary(report.kind_counts, *alone, *resumed)}, "  # the archive's chunks, as info counts them
            f"{report.input_size:,} B -> {report.archive_size:,} B, {report.seconds:.1f} s",
            err=True,
        )
    if verbose and not quiet:
        import torch

        identity = compressor.loaded.identity
        click.echo(f"  model {show(identity.source_id)} on {device}, {plural(torch.get_num_threads(), 'thread')}, "
                   f"loaded in {loaded_in:.1f} s", err=True)
        for line in chunk_lines(archive):
            click.echo(line, err=True)


def _journal_path(target: str | None, data: bytes, compressor):
    """Where compress journals: beside a file output (OUT.journal); for stdout or a
    device, in the user cache, named by the input's checksum and the settings and model
    (a rerun of the same command finds it). None, with a warning, if the cache cannot be
    written: the run works, but an interrupt loses its progress."""
    from llmzip import codec
    from llmzip.model import cache_root

    if target is not None and not io.in_place(target):
        return codec.journal_path_for(target)
    import xxhash

    key = json.dumps({"settings": compressor.settings(), "model": compressor.loaded.identity.to_dict()}, sort_keys=True)
    directory = cache_root() / "journals"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        io.probe_directory(str(directory))
    except OSError as exc:
        import logging

        logging.getLogger(__name__).warning(
            "llmzip: cannot journal in %s (%s); an interrupted run will start over", directory, exc.strerror
        )
        return None
    return directory / f"{xxhash.xxh64(data).hexdigest()}-{xxhash.xxh64(key.encode()).hexdigest()}.journal"
