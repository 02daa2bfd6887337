"""Scratch: the issue's lost-cause case: 1.5 KB of English with the 2-layer fixture model, with and without give-up."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]  # the checkout this file lies in (bench/results/steps_issue14/)
import sys, time, torch
torch.set_num_threads(1)
from llmzip.codec import LmzCompressor
from llmzip.config import TrainConfig
data = (REPO / "fixtures/compat/default-model-memory-int.txt").read_bytes()[:1536]
for window in (int(a) for a in sys.argv[1:]):
    steps = []
    comp = LmzCompressor(model=str(REPO / "fixtures/tiny-gemma3"), train=TrainConfig(giveup_window=window))
    began = time.perf_counter()
    archive, report = comp.compress_with_report(data, on_step=lambda s, n, l: steps.append(n))
    print(f"giveup_window {window}: {time.perf_counter() - began:.1f} s, {len(steps)} batched steps, {sum(steps)} chunk-steps, "
          f"{report.chunks} chunks, {report.memory_chunks} memory, {report.fallback_chunks} fallback, archive {len(archive)} B", flush=True)
