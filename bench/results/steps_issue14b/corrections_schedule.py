"""Scratch (attempt 20): compress a text at the codec's defaults but with another
corrections schedule, extract it again, and report size, steps and time.

    python corrections_schedule.py CORRECTIONS CORRECTION_STEPS TEXT [OPTIMIZER [ARCHIVE]]

OPTIMIZER is a `TrainConfig.optimizer` ("adam", the default, or "rprop": attempt 23);
ARCHIVE, where given, receives the .lmz written.

Prints one line per trained chunk (steps, corrections, stored bytes) and a summary line.
"""
import sys
import time
from pathlib import Path

import torch

from llmzip.codec import LmzCompressor, LmzDecompressor
from llmzip.config import TrainConfig

torch.set_num_threads(1)
corrections, per, text = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
optimizer = sys.argv[4] if len(sys.argv) > 4 else "adam"
data = text.read_bytes()
compressor = LmzCompressor(train=TrainConfig(corrections=corrections, correction_steps=per, optimizer=optimizer))
trainer, train, steps = compressor.trainer, compressor.trainer.train, []


def reporting_train(token_lists, **kwargs):
    def done(i, r):
        steps.append(r.steps)
        print(f"chunk {i}: {r.steps} steps, accepted {r.accepted}, {len(r.corrections)} corrections, "
              f"{len(r.payload)} B stored, decode margin {r.decode_min_margin:.2f}", flush=True)
    return train(token_lists, on_chunk_done=done, **kwargs)


trainer.train = reporting_train
began = time.perf_counter()
archive, report = compressor.compress_with_report(data)
seconds = time.perf_counter() - began
restored = LmzDecompressor().decompress(archive)
if len(sys.argv) > 5:
    Path(sys.argv[5]).write_bytes(archive)
print(f"{text.name}: {optimizer}, corrections {corrections}, one per {per} steps: {len(data)} B -> {len(archive)} B "
      f"({len(archive) / len(data):.3f}x), {report.memory_chunks} memory, {report.lm_chunks} lm, "
      f"{report.fallback_chunks} fallback, steps {steps} (mean {sum(steps) / max(1, len(steps)):.0f}), "
      f"compress {seconds:.0f} s, restored exactly: {restored == data}", flush=True)
