"""Scratch (issue 14, session 12): the coded default's slow 64-token chunks, traced.

    python tail_probe.py CSV TOKENS ROWS [key=value ...]

Trains the listed rows (e.g. "3,4,11,13,18" or "0-19") in the codec's default vector form
(kind memory-int-lm), with TrainConfig overrides given as key=value (ints, floats or
strings). Prints, at every full-vocabulary check of every chunk, its step, loss and number
of short positions (gap under the margin) against what it may correct, then one line per
finished chunk and a summary.

The tail_trim*.log files were written by an earlier version of this script that patched
the same weighting in as TRIM_WEIGHT=w (now `correction_weight=w`, attempt 25; that patch
failed on full checks of some chunks only, which the tail rows, checked in step, never hit);
tail_seed0.log is the default of attempt 23 (`correction_weight=1` now).
"""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/
from corpus import read_rows  # noqa: E402
from llmzip.codec import LmzCompressor  # noqa: E402
from llmzip.config import TrainConfig  # noqa: E402
from llmzip.train import MemoryTrainer  # noqa: E402


def parse_rows(spec):
    rows = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        rows += list(range(int(first), int(last or first) + 1))
    return rows


def value(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


torch.set_num_threads(1)
csv, tokens, rows = sys.argv[1], int(sys.argv[2]), parse_rows(sys.argv[3])
overrides = {key: value(v) for key, v in (arg.split("=", 1) for arg in sys.argv[4:])}
compressor = LmzCompressor(train=TrainConfig(**overrides))
trainer = compressor.trainer
tokenizer = compressor.loaded.tokenizer
texts = read_rows(max(rows) + 1, csv)
chunks = [tokenizer(texts[r], add_special_tokens=False).input_ids[: tokens or None] for r in rows]
print(f"{trainer.config}", flush=True)
began = time.perf_counter()

allowed = MemoryTrainer._allowed


def traced_allowed(self, chunk):
    n = allowed(self, chunk)
    print(f"  row {rows[chunk.index]} step {chunk.steps}: loss {chunk.loss:.3f}, short {len(chunk.short())}, "
          f"allowed {n}", flush=True)
    return n


MemoryTrainer._allowed = traced_allowed

def report(index, result):
    print(f"row {rows[index]}: {len(chunks[index])} tokens, steps {result.steps}, accepted {result.accepted}, "
          f"{len(result.corrections)} corrections, {len(result.payload)} B, decode margin "
          f"{result.decode_min_margin:.2f} at {time.perf_counter() - began:.0f}s", flush=True)


results = trainer.train(chunks, on_chunk_done=report)
kept = [r for r in results if r.accepted]
print(f"steps {[r.steps for r in results]}: mean {statistics.mean(r.steps for r in results):.1f}; accepted "
      f"{len(kept)}/{len(results)}; min decode margin {min((r.decode_min_margin for r in kept), default=float('nan')):.2f}; "
      f"mean {statistics.mean(len(r.corrections) for r in kept):.1f} corrections and "
      f"{statistics.mean(len(r.payload) for r in kept):.0f} B a kept chunk; {time.perf_counter() - began:.0f} s", flush=True)
