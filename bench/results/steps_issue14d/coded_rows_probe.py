"""Scratch (attempt 23): the issue's rows trained in the codec's default vector form (kind
memory-int-lm: 4-bit coded vectors with corrections) instead of full fp16 vectors: steps,
corrections, stored bytes and decode margin per row, with the trainer the compressor builds.

    python coded_rows_probe.py CSV TOKENS ROWS [OPTIMIZER CORRECTIONS CORRECTION_STEPS]

TOKENS 0 trains each row whole (Table 2); ROWS as "0-19". Without the last three the
codec's defaults are used.
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

torch.set_num_threads(1)
csv, tokens, (first, last) = sys.argv[1], int(sys.argv[2]), map(int, sys.argv[3].split("-"))
overrides = {}
if len(sys.argv) > 4:
    overrides = {"optimizer": sys.argv[4], "corrections": int(sys.argv[5]), "correction_steps": int(sys.argv[6])}
compressor = LmzCompressor(train=TrainConfig(**overrides))
tokenizer = compressor.loaded.tokenizer
rows = list(range(first, last + 1))
texts = read_rows(last + 1, csv)
chunks = [tokenizer(texts[r], add_special_tokens=False).input_ids[: tokens or None] for r in rows]
print(f"{compressor.trainer.config.optimizer}, corrections {compressor.train_config.corrections}, one per "
      f"{compressor.train_config.correction_steps} steps, form {compressor.vector_kind}", flush=True)
began = time.perf_counter()


def report(index, result):
    print(f"row {rows[index]}: {len(chunks[index])} tokens, steps {result.steps}, accepted {result.accepted}, "
          f"{len(result.corrections)} corrections, {len(result.payload)} B, decode margin "
          f"{result.decode_min_margin:.2f} at {time.perf_counter() - began:.0f}s", flush=True)


results = compressor.trainer.train(chunks, on_chunk_done=report)
kept = [r for r in results if r.accepted]
print(f"steps {[r.steps for r in results]}: mean {statistics.mean(r.steps for r in results):.1f}; accepted "
      f"{len(kept)}/{len(results)}; min decode margin {min(r.decode_min_margin for r in kept):.2f}; mean "
      f"{statistics.mean(len(r.corrections) for r in kept):.1f} corrections and {statistics.mean(len(r.payload) for r in kept):.0f} B "
      f"a kept chunk; {time.perf_counter() - began:.0f} s", flush=True)
