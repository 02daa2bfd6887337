"""Where compress's wall time goes: model load, optimiser steps, full-vocabulary checks,
verification decodes, kind choice (LM coding), journal and container, idle batch slots.

Issue 31 asks that everything which is not an optimiser step be at most a quarter of
compress's wall time. This script compresses a text through the public API
(:class:`llmzip.LmzCompressor`, exactly what ``llmzip compress`` runs) with the real
methods wrapped in timers, here in the script: the product has no profiling switch.
Each part is timed *exclusively* (a wrapped call inside another is subtracted from the
outer one), so the parts add up to the wall time; "other" is what no wrapper covers.

    python bench/compress_profile.py bash_readme.txt --forms default,rank0 --threads 2 \
        --json bench/results/compress_profile.json

Parts:

* ``load``: :class:`LmzCompressor` construction (load the model, build the training copy);
* ``chunking``: splitting and tokenizing;
* ``steps``: the trainer's loop less everything below: forward, backward, optimiser;
* ``full_checks``: :meth:`MemoryTrainer._full_check` (the full-vocabulary pass);
* ``train_verify``: decodes the trainer runs to accept a vector (:func:`llmzip.decode.decode_batch`
  called from :mod:`llmzip.train`);
* ``choose_verify``: :meth:`KindChooser.verify_vectors` (extract's batched decode);
* ``lm_coding`` / ``lm_verify``: :meth:`KindChooser.lm_code` (chunks without a vector) and
  :meth:`KindChooser.verify_lm`;
* ``journal``, ``container``: :class:`Journal` writes; packing and comparing archives.

``idle_slots`` is part of ``steps``, reported apart: for each step with fewer chunks than
``batch_size``, its time beyond what those chunks cost at the full batch's time per
chunk-step (median over full steps). On a CPU at its matmul rate a thin batch costs about
its share, so this stays small there; on a GPU it does not.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

FORMS = {"default": {}, "rank0": {"rank": 0}}  # name -> TrainConfig fields (default: the codec's coded 4-bit vectors)


class Profile:
    """Exclusive wall time per part: a part's time less the parts timed inside it."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._inner: list[float] = []  # per open part, the time its nested parts took

    @contextlib.contextmanager
    def part(self, name: str):
        started = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[name] += elapsed - self._inner.pop()
            self.calls[name] += 1
            if self._inner:
                self._inner[-1] += elapsed

    def wrap(self, owner, attribute: str, name: str) -> None:
        """Time every call of ``owner.attribute`` (a function or method) as part ``name``."""
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            with self.part(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)

    def total(self, names) -> float:
        return sum(self.seconds[name] for name in names)


def instrument(profile: Profile) -> None:
    """Wrap the real calls of compress (see the module docstring for what each part is).
    A call this tree does not have is skipped, so the script also profiles older trees
    (``PYTHONPATH=`` a worktree of an earlier commit) and choosers that code and verify
    lm chunks in one call."""
    from llmzip import choose, codec, journal, train

    calls = [
        (codec.LmzCompressor, "__init__", "load"),
        (codec, "split_counted", "chunking"),
        (train.MemoryTrainer, "train", "steps"),
        (train.MemoryTrainer, "_full_check", "full_checks"),
        (train, "decode", "train_verify"),  # as train imported them: its own verification decodes
        (train, "decode_batch", "train_verify"),
        (choose.KindChooser, "verify_vectors", "choose_verify"),
        (choose.KindChooser, "lm_code", "lm_coding"),
        (choose.KindChooser, "verify_lm", "lm_verify"),
        (journal.Journal, "__init__", "journal"),
        (journal.Journal, "append", "journal"),
        (codec.LmzCompressor, "pack_archive", "container"),
        (codec, "smallest_archive", "container"),
        (codec.CompressReport, "count", "container"),
    ]
    for owner, attribute, part in calls:
        if hasattr(owner, attribute):
            profile.wrap(owner, attribute, part)


NON_STEP = ("load", "chunking", "full_checks", "train_verify", "choose_verify", "lm_coding", "lm_verify", "journal",
            "container", "other")


def run_form(profile: Profile, data: bytes, name: str, fields: dict, threads: int, model: str) -> dict:
    """Compress ``data`` once with the form ``fields`` (``profile`` instrumented, emptied
    here); the profile as a JSON-able dict."""
    import torch

    from llmzip import LmzCompressor
    from llmzip.config import TrainConfig

    torch.set_num_threads(threads)
    profile.seconds.clear()
    profile.calls.clear()
    steps: list[tuple[float, int]] = []  # (step seconds, chunks in the batch) per batched step
    marks = {"at": None, "non_step": 0.0}

    def on_step(step: int, n_active: int, loss: float) -> None:
        # The time since the last step, less the non-step parts timed in between, is this step's.
        now, non_step = time.perf_counter(), profile.total(NON_STEP)
        if marks["at"] is not None:
            steps.append((now - marks["at"] - (non_step - marks["non_step"]), n_active))
        marks["at"], marks["non_step"] = now, non_step
        if step % 25 == 0:  # a run takes minutes to hours on a loaded CPU: show that it moves
            print(f"{name}: step {step}, {n_active} in the batch, {now - started:.0f} s", file=sys.stderr, flush=True)

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    compressor = LmzCompressor(model=model, train=TrainConfig(**fields))
    with tempfile.TemporaryDirectory() as scratch:
        archive, report = compressor.compress_with_report(data, journal_path=Path(scratch) / "journal",
                                                          on_step=on_step)
    wall = time.perf_counter() - started
    profile.seconds["other"] = wall - sum(profile.seconds.values())

    batch = compressor.train_config.batch_size
    full = [seconds / n for seconds, n in steps if n == batch]
    per_chunk_step = statistics.median(full) if full else None
    idle = sum(max(0.0, seconds - n * per_chunk_step) for seconds, n in steps if n < batch) if full else 0.0
    parts = {part: round(seconds, 3) for part, seconds in sorted(profile.seconds.items())}
    non_step = profile.total(NON_STEP)
    return {
        "form": name,
        "train_fields": fields,
        "threads": threads,
        "train_dtype": compressor.trainer.train_dtype,
        "loadavg_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "input_bytes": len(data),
        "archive_bytes": len(archive),
        "kind_counts": report.kind_counts,
        "memory_chunks": report.memory_chunks,
        "chunks": report.chunks,
        "wall_s": round(wall, 3),
        "parts_s": parts,
        "calls": dict(profile.calls),
        "shares": {part: round(seconds / wall, 4) for part, seconds in parts.items()},
        "non_step_share": round(non_step / wall, 4),
        "non_step_share_without_load": round((non_step - profile.seconds["load"]) / (wall - profile.seconds["load"]), 4),
        "batched_steps": len(steps) + 1,
        "chunk_steps": sum(n for _, n in steps),
        "slot_occupancy": round(sum(n for _, n in steps) / (batch * len(steps)), 4) if steps else None,
        "s_per_chunk_step_full_batch": round(per_chunk_step, 4) if per_chunk_step else None,
        "idle_slots_s": round(idle, 3),
    }


def table(rows: list[dict]) -> str:
    """The profiles as a Markdown table, one column per form: seconds and share of wall time."""
    parts = ["load", "chunking", "steps", "full_checks", "train_verify", "choose_verify", "lm_coding", "lm_verify",
             "journal", "container", "other"]
    lines = ["| part | " + " | ".join(row["form"] for row in rows) + " |", "|---|" + "---|" * len(rows)]
    for part in parts:
        cells = [f"{row['parts_s'].get(part, 0.0):.1f} s ({100 * row['shares'].get(part, 0.0):.0f} %)" for row in rows]
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    lines.append("| of steps: idle slots | " + " | ".join(f"{row['idle_slots_s']:.1f} s" for row in rows) + " |")
    lines.append("| wall | " + " | ".join(f"{row['wall_s']:.1f} s" for row in rows) + " |")
    lines.append("| not a step | " + " | ".join(f"{100 * row['non_step_share']:.0f} %" for row in rows) + " |")
    lines.append("| not a step, load excluded | "
                 + " | ".join(f"{100 * row['non_step_share_without_load']:.0f} %" for row in rows) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="text file to compress")
    parser.add_argument("--forms", default="default,rank0", help=f"comma-separated, of {', '.join(FORMS)}")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--model", default="default", help="model spec (a fixture model directory checks the script)")
    parser.add_argument("--json", help="write the profiles here")
    args = parser.parse_args(argv)
    data = Path(args.input).read_bytes()
    profile = Profile()
    instrument(profile)
    rows = []
    for name in args.forms.split(","):
        rows.append(run_form(profile, data, name, FORMS[name], args.threads, args.model))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"input": Path(args.input).name, "profiles": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
