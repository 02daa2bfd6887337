"""Scratch probe for attempt 22: Adam with a per-chunk rollback on loss spikes. Traces of
64-token chunks (attempts 18, 21) show Adam at lr 1.0 jumping from a loss of 0.2-0.9 to
0.6-3.6 late in training, then spending 50-360 steps to come back. Here each chunk keeps
a snapshot of its parameters and Adam moments at its lowest loss so far; when its loss
rises above SPIKE_RATIO x that lowest loss + SPIKE_ADD, it returns to the snapshot and
halves its own learning rate (down to MIN_FACTOR), skipping the update measured at the
spike. Runs on the rows and settings probe_setting.py takes:

    SPIKE_RATIO=1.5 SPIKE_ADD=0.1 python results/steps_issue14c/rollback_probe.py PROBE_SETTING_ARGS...

It swaps MemoryTrainer._step for this process only; llmzip has no rollback option.
"""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/
import llmzip.train as train  # noqa: E402
import probe_setting  # noqa: E402

SPIKE_RATIO = float(os.environ.get("SPIKE_RATIO", "1.5"))
SPIKE_ADD = float(os.environ.get("SPIKE_ADD", "0.1"))
MIN_FACTOR = float(os.environ.get("MIN_FACTOR", "0.125"))
rollbacks = 0


@torch.no_grad()
def rollback_step(self, chunks, g):
    global rollbacks
    keep = []
    for i, c in enumerate(chunks):
        if not hasattr(c, "best_loss"):
            c.best_loss, c.lr_factor = float("inf"), 1.0
        if c.loss < c.best_loss:  # c.loss was measured at c.params, before this update
            c.best_loss, c.best = c.loss, (c.params.clone(), tuple(s.clone() for s in c.state))
            keep.append(i)
        elif c.loss > SPIKE_RATIO * c.best_loss + SPIKE_ADD:
            params, state = c.best
            c.params, c.state = params.clone(), tuple(s.clone() for s in state)
            c.lr_factor = max(MIN_FACTOR, c.lr_factor / 2)
            c.steps += 1  # the evaluation was spent; no update from the spiked point
            rollbacks += 1
            print(f"rollback: row {c.index} at step {c.steps}: loss {c.loss:.3f}, best {c.best_loss:.3f}, "
                  f"lr factor now {c.lr_factor}", flush=True)
        else:
            keep.append(i)
    if not keep:
        return
    mine = [chunks[i] for i in keep]
    params = torch.stack([c.params for c in mine])  # (b, p)
    first, second = (torch.stack(part) for part in zip(*(c.state for c in mine)))
    unit = self.embed_rms * self.form.lr_scale * torch.tensor([c.lr_factor for c in mine], device=g.device)[:, None]
    steps = torch.tensor([c.steps for c in mine], dtype=torch.float32, device=g.device)[:, None]
    first, second = train._adam(params, first, second, g[keep], steps, unit, self.config)
    for i, c in enumerate(mine):
        c.params, c.state = params[i], (first[i], second[i])
        c.steps += 1


train.MemoryTrainer._step = rollback_step
sys.argv[0] = "rollback_probe.py"
try:
    probe_setting.main()
finally:
    print(f"rollbacks: {rollbacks}")
