"""Measure the memory-token engine on a corpus the way the paper does (``llmzip bench``).

The paper (Sastre & Rosá 2025) trains one vector per CSV row, each row whole, and reports
two numbers per corpus: "Avg. Acc", the mean teacher-forced token accuracy at the end of
training, and "Reconstructed", how many rows greedy decoding regenerates exactly. This
module measures both with llmzip's own engine (:class:`llmzip.train.MemoryTrainer`) and
its canonical :func:`llmzip.decode.decode`, plus what a user of llmzip also needs: steps,
seconds, tokens and decode margins per row, and how many rows llmzip would actually store
(exact *and* within its verification margin).

Where a row does not fit in one vector, :func:`capacity` finds the longest token prefix
that does: a batched bisection over prefix length (several lengths per chunk trained in
one batch per round). It assumes that a prefix fits whenever a longer one does; that
need not hold for every chunk, so every trial is reported.

Rows are trained *whole*, never split by :mod:`llmzip.chunking`: the point is to measure
one vector per row, as the paper does.
"""

import csv
import importlib.util
import io
import math
import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

from llmzip.chunking import detokenize
from llmzip.errors import InputError, LmzError

MAX_CSV_FIELD = 1 << 20  # a bench row longer than 1 MiB is a mistake, not a chunk


@dataclass
class RowResult:
    """One corpus row trained into one vector."""

    row: int  # 0-based data row of the CSV
    chars: int
    tokens: int
    steps: int
    seconds: float  # from entering the batch to verified (batch-mates overlap in time)
    token_accuracy: float  # teacher-forced argmax accuracy at the end (the paper's "Acc")
    loss: float
    reconstructed: bool  # decode() of the fp16 vector gives the row's ids, which give its bytes
    stored: bool  # reconstructed with a decode margin >= verify_margin: llmzip would store it
    decode_min_margin: Optional[float]  # None where decode() was skipped (teacher forcing already wrong)
    converged: bool  # reached the training margin within the step budget


@dataclass
class CapacityTrial:
    """One prefix length tried for one row."""

    tokens: int
    stored: bool
    steps: int


@dataclass
class CapacityResult:
    """The longest prefix of a row that one vector held, found by bisection."""

    row: int
    row_tokens: int
    longest_stored: int  # tokens; 0 if no prefix tried was stored
    shortest_failed: int  # tokens; the row's length if no shorter prefix failed
    trials: list[CapacityTrial] = field(default_factory=list)


def read_corpus(path: str | os.PathLike, *, rows: int, column: str = "chunk", start: int = 0) -> list[str]:
    """``rows`` values of ``column`` from data row ``start`` on (0-based), in a UTF-8 CSV
    file with a header line."""
    previous_limit = csv.field_size_limit(MAX_CSV_FIELD)  # a process-wide setting: restored below
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or column not in reader.fieldnames:
                raise InputError(f"{path}: no column {column!r} (columns: {', '.join(reader.fieldnames or [])})")
            texts = [record[column] for _, record in zip(range(start + rows), reader)][start:]
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a valid CSV file ({exc})") from None
    finally:
        csv.field_size_limit(previous_limit)
    if not texts:
        raise InputError(f"{path}: no data rows" + (f" from row {start} on" if start else ""))
    if any(text == "" or text is None for text in texts):
        raise InputError(f"{path}: an empty {column!r} value (every row must have text to train on)")
    return texts


def tokenize(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (the prompt supplies BOS)."""
    return [tokenizer(text, add_special_tokens=False).input_ids for text in texts]


def run(
    model,
    tokenizer,
    texts: Sequence[str],
    config,
    *,
    first_row: int = 0,
    on_row: Optional[Callable[[RowResult], None]] = None,
    on_step: Optional[Callable[[int, int, float], None]] = None,
    start=None,
) -> list[RowResult]:
    """Train one vector per text with ``config`` (a :class:`llmzip.config.TrainConfig`),
    full fp16 vectors as in the paper, from ``start`` (:func:`llmzip.train.configured_start`;
    None: seeded random starts); ``first_row`` is the CSV row number of ``texts[0]``, for
    the results' ``row``."""
    from llmzip.train import MemoryTrainer

    ids = tokenize(tokenizer, texts)
    restores = [detokenize(tokenizer, row_ids) == text for row_ids, text in zip(ids, texts)]
    results: list[Optional[RowResult]] = [None] * len(texts)

    def finished(index: int, chunk) -> None:
        reconstructed = chunk.exact and restores[index]
        results[index] = RowResult(
            row=first_row + index,
            chars=len(texts[index]),
            tokens=len(ids[index]),
            steps=chunk.steps,
            seconds=chunk.seconds,
            token_accuracy=chunk.token_accuracy,
            loss=chunk.loss,
            reconstructed=reconstructed,
            stored=reconstructed and chunk.accepted,
            decode_min_margin=None if math.isinf(chunk.decode_min_margin) else chunk.decode_min_margin,
            converged=chunk.converged,
        )
        if on_row is not None:
            on_row(results[index])

    MemoryTrainer(model, config, start=start).train(ids, on_chunk_done=finished, on_step=on_step)
    return results


def capacity(
    model,
    rows: Sequence[tuple[int, list[int]]],
    config,
    *,
    probes: int = 3,
    resolution: int = 2,
    on_round: Optional[Callable[[int, list[CapacityResult]], None]] = None,
    start=None,
) -> list[CapacityResult]:
    """Longest stored prefix of each ``(row, ids)``, whose whole ids did not fit.

    Each round trains ``probes`` prefix lengths evenly spaced inside every open interval
    (longest stored, shortest failed), all rows' probes in one batched
    :meth:`~llmzip.train.MemoryTrainer.train` call, until every interval is at most
    ``resolution`` tokens wide. ``start`` as for :func:`run`.
    """
    from llmzip.train import MemoryTrainer

    trainer = MemoryTrainer(model, config, start=start)
    found = [CapacityResult(row=row, row_tokens=len(ids), longest_stored=0, shortest_failed=len(ids)) for row, ids in rows]
    round_number = 0
    while True:
        jobs = []  # (result index, prefix length)
        for i, result in enumerate(found):
            low, high = result.longest_stored, result.shortest_failed
            if high - low > resolution:
                lengths = {low + (high - low) * (k + 1) // (probes + 1) for k in range(probes)}
                jobs += [(i, n) for n in sorted(lengths - {low, high, 0})]
        if not jobs:
            return found
        trained = trainer.train([rows[i][1][:n] for i, n in jobs])
        for (i, n), chunk in zip(jobs, trained):
            result = found[i]
            result.trials.append(CapacityTrial(tokens=n, stored=chunk.accepted, steps=chunk.steps))
            if chunk.accepted:
                result.longest_stored = max(result.longest_stored, n)
        for result in found:  # the shortest failure above the longest success
            failures = [t.tokens for t in result.trials if not t.stored and t.tokens > result.longest_stored]
            result.shortest_failed = min(failures + [result.row_tokens])
        round_number += 1
        if on_round is not None:
            on_round(round_number, found)


def summarise(results: Sequence[RowResult], wall_seconds: float) -> dict:
    """Aggregate figures, in the paper's terms and llmzip's."""
    n = len(results)
    return {
        "rows": n,
        "avg_acc": sum(r.token_accuracy for r in results) / n,
        "reconstructed": sum(r.reconstructed for r in results),
        "stored": sum(r.stored for r in results),
        "mean_tokens": sum(r.tokens for r in results) / n,
        "min_tokens": min(r.tokens for r in results),
        "max_tokens": max(r.tokens for r in results),
        "mean_steps": sum(r.steps for r in results) / n,
        "wall_seconds": wall_seconds,
        "wall_seconds_per_row": wall_seconds / n,
    }


def paper_table(summary: dict, model_name: str) -> str:
    """The paper's row format: model | Avg. Acc | Reconstructed, plus llmzip's extras."""
    s = summary
    return "\n".join([
        "| model | rows | tokens (mean, min-max) | Avg. Acc | Reconstructed | stored by llmzip | mean steps | s / row |",
        "|---|---|---|---|---|---|---|---|",
        f"| {model_name} | {s['rows']} | {s['mean_tokens']:.0f}, {s['min_tokens']}-{s['max_tokens']} "
        f"| {s['avg_acc']:.2f} | {s['reconstructed']}/{s['rows']} | {s['stored']}/{s['rows']} "
        f"| {s['mean_steps']:.0f} | {s['wall_seconds_per_row']:.1f} |",
    ])


def rows_table(results: Sequence[RowResult]) -> str:
    """One line per row, for the log and BENCHMARKS.md."""
    lines = ["| row | tokens | steps | acc | reconstructed | stored | decode margin | s |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.row} | {r.tokens} | {r.steps} | {r.token_accuracy:.3f} | {'yes' if r.reconstructed else 'no'} "
                     f"| {'yes' if r.stored else 'no'} | {'-' if r.decode_min_margin is None else round(r.decode_min_margin, 2)} "
                     f"| {r.seconds:.0f} |")
    return "\n".join(lines)


def machine() -> dict:
    """Where the numbers were measured."""
    import torch
    import transformers

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def report(results: Sequence[RowResult], summary: dict, capacities: Sequence[CapacityResult], **context) -> dict:
    """Everything measured, as one JSON-ready dict (stable keys)."""
    return {
        **context,
        "summary": summary,
        "rows": [asdict(r) for r in results],
        "capacity": [asdict(c) for c in capacities],
    }


def check_plotting() -> None:
    """Fail before any training if ``--plot`` cannot be honoured."""
    if importlib.util.find_spec("matplotlib") is None:
        raise LmzError("--plot needs matplotlib: pip install 'llmzip[bench]'")


def plot(results: Sequence[RowResult], *, title: str) -> bytes:
    """A PNG with one dot per row against its length in tokens: teacher-forced accuracy
    (left) and optimiser steps (right); filled green where the row was reconstructed
    exactly, hollow red where not."""
    import matplotlib

    matplotlib.use("Agg")  # no display; the figure only goes to a file
    import matplotlib.pyplot as plt

    figure, (accuracy_axes, steps_axes) = plt.subplots(1, 2, figsize=(9.6, 3.6), dpi=120)
    for reconstructed, style in ((True, dict(color="tab:green", label="reconstructed exactly")),
                                 (False, dict(facecolors="none", edgecolors="tab:red", label="not reconstructed"))):
        picked = [r for r in results if r.reconstructed == reconstructed]
        if picked:
            accuracy_axes.scatter([r.tokens for r in picked], [r.token_accuracy for r in picked], **style)
            steps_axes.scatter([r.tokens for r in picked], [r.steps for r in picked], **style)
    accuracy_axes.set_ylabel("teacher-forced token accuracy")
    accuracy_axes.set_ylim(-0.03, 1.05)
    accuracy_axes.legend(loc="lower left", fontsize=8)
    steps_axes.set_ylabel("optimiser steps")
    steps_axes.set_ylim(bottom=0)
    for axes in (accuracy_axes, steps_axes):
        axes.set_xlabel("row length (tokens)")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png")
    plt.close(figure)
    return png.getvalue()
