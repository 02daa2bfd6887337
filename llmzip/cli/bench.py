"""``llmzip bench``: the memory-token paper's measurements on a CSV corpus."""

import dataclasses
import json
import os
import time

import click

from llmzip.cli import files as io
from llmzip.cli.group import cli
from llmzip.cli.messages import Progress, margin, setup_logging, show_progress
from llmzip.cli.options import (force_option, model_option, optimizer_option, torch_options, train_config,
                                train_option, training_options, use_torch, verbosity)
from llmzip.config import DEFAULT_MODEL


@cli.command()
@click.argument("corpus", type=click.Path())
@click.option("--rows", type=click.IntRange(1), default=20, show_default=True, help="Use ROWS data rows.")
@click.option("--start", type=click.IntRange(0), default=0, show_default=True, help="First data row to use (0-based), to run a corpus in slices.")
@click.option("--column", default="chunk", show_default=True, help="CSV column holding the text.")
@model_option(from_archive=False)
@torch_options
@training_options("row")
@optimizer_option
@train_option("lr", click.FloatRange(0, min_open=True), "With --optimizer adam: step size in embedding-RMS units")
@click.option("--capacity", is_flag=True, help="For rows not stored, bisect the longest token prefix one vector holds.")
@click.option("--probes", type=click.IntRange(1), default=3, show_default=True, help="Prefix lengths tried per row in each capacity round (1 = plain bisection).")
@click.option("--resolution", type=click.IntRange(1), default=2, show_default=True, help="Capacity bisection stops at this many tokens.")
@click.option("--json", "json_path", type=click.Path(), help="Write every measurement here as JSON.")
@click.option("--plot", "plot_path", type=click.Path(), help="Write a PNG of accuracy against row length here.")
@force_option
@verbosity
def bench(corpus, rows, start, column, model, device, threads, capacity, probes, resolution, json_path, plot_path, force,
          quiet, verbose, no_progress, **train):
    """Reproduce the memory-token paper's measurements on CORPUS, a CSV with a text column.

    Trains one vector per row (each row whole, as the paper does) and prints the paper's
    table: mean teacher-forced token accuracy ("Avg. Acc") and rows regenerated exactly
    by greedy decoding ("Reconstructed"), plus how many llmzip would store (exact and
    within its margin), steps and seconds. Per-row results go to stderr as they finish.
    """
    setup_logging(quiet, verbose)
    for path in (json_path, plot_path):
        if path is not None:
            io.check_output(path, force, source=corpus, binary=None)
    from llmzip import bench as measure

    texts = measure.read_corpus(corpus, rows=rows, column=column, start=start)
    if plot_path is not None:
        measure.check_plotting()

    use_torch(device, threads)
    from llmzip.model import load_model
    from llmzip.train import configured_start

    config = train_config(device, **train)
    loaded = load_model(model, device=device)
    start_vector = configured_start(config, loaded.identity.weights_fingerprint)

    def row_done(result):
        if not quiet:
            click.echo(f"llmzip bench: row {result.row}: {result.tokens} tokens, {result.steps} steps, "
                       f"acc {result.token_accuracy:.3f}, reconstructed {'yes' if result.reconstructed else 'no'}, "
                       f"decode margin {margin(result.decode_min_margin)}, {result.seconds:.0f} s", err=True)

    began = time.perf_counter()
    with Progress(enabled=show_progress(quiet, no_progress)) as progress:
        results = measure.run(loaded.model, loaded.tokenizer, texts, config, first_row=start,
                              on_row=row_done, on_step=progress.step, start=start_vector)
    summary = measure.summarise(results, time.perf_counter() - began)
    name = loaded.identity.source_id if model != DEFAULT_MODEL else "Gemma 3 270M (default)"
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
        io.write_output(json_path, (json.dumps(document, indent=1, sort_keys=True) + "\n").encode(), force)
    if plot_path is not None:
        title = f"{os.path.basename(corpus)}, rows {start}-{start + len(results) - 1}, {name}"
        io.write_output(plot_path, measure.plot(results, title=title), force)
