"""Scratch probe for attempt 24 (issue 14, item 3): progressive prefixes. Each chunk
trains first on its first PREFIX_START tokens only; whenever it meets the stop rule on
its current prefix (every position at the margin, at a full-vocabulary check), the
prefix doubles, until it is the whole chunk, which then stops and is verified as usual.
A step on a prefix is cheaper (the forward and backward run over the prefix only), so
besides steps the probe counts token-steps: the sum over steps of the tokens trained.

    PREFIX_START=16 python results/steps_issue14d/progressive_probe.py PROBE_SETTING_ARGS...

It wraps MemoryTrainer._start, ._step and ._verify for this process only; llmzip has no
progressive option.
"""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/
import llmzip.train as train  # noqa: E402
import probe_setting  # noqa: E402

PREFIX_START = int(os.environ.get("PREFIX_START", "16"))
totals = {"steps": 0, "token_steps": 0, "growths": 0}
start, step, verify = train.MemoryTrainer._start, train.MemoryTrainer._step, train.MemoryTrainer._verify


def progressive_start(self, index, ids, margin):
    chunk = start(self, index, ids, margin)
    chunk.full_ids, chunk.token_steps = chunk.ids, 0
    chunk.ids = chunk.full_ids[:PREFIX_START]
    chunk.candidates = chunk.ids
    return chunk


def counting_step(self, chunks, g):
    for c in chunks:
        c.token_steps += len(c.ids)
    step(self, chunks, g)


def growing_verify(self, chunk):
    if len(chunk.ids) < len(chunk.full_ids):  # the prefix fits: grow it, train on
        chunk.ids = chunk.full_ids[: 2 * len(chunk.ids)]
        chunk.candidates = torch.unique(torch.cat([chunk.candidates, chunk.ids.to(chunk.candidates.device)]))
        totals["growths"] += 1
        print(f"row index {chunk.index}: prefix {len(chunk.ids)} at step {chunk.steps}", flush=True)
        return None
    result = verify(self, chunk)
    if result is not None:
        totals["steps"] += result.steps
        totals["token_steps"] += chunk.token_steps
        print(f"row index {chunk.index}: {result.steps} steps, {chunk.token_steps} token-steps "
              f"({chunk.token_steps / len(chunk.full_ids):.0f} full-chunk steps)", flush=True)
    return result


train.MemoryTrainer._start = progressive_start
train.MemoryTrainer._step = counting_step
train.MemoryTrainer._verify = growing_verify
sys.argv[0] = "progressive_probe.py"
try:
    probe_setting.main()
finally:
    print(f"prefix start {PREFIX_START}: {totals}", flush=True)
