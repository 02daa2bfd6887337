"""Scratch probe for attempt 20: Rprop for a chunk's first SWITCH steps, then Adam with
fresh moments (bias correction and warmup counted from the switch), on the rows and
settings probe_setting.py takes. Rprop's loss leads Adam's for ~100 steps on 64-token
chunks and trails at the finish (attempt 15); this asks whether the two phases combine.

    HYBRID_SWITCH=60 python results/steps_issue14b/hybrid_probe.py PROBE_SETTING_ARGS...

It swaps MemoryTrainer._step for this process only; llmzip has no hybrid option.
"""
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/
import llmzip.train as train  # noqa: E402
import probe_setting  # noqa: E402

SWITCH = int(os.environ["HYBRID_SWITCH"])


@torch.no_grad()
def hybrid_step(self, chunks, g):
    unit = self.embed_rms * self.form.lr_scale
    for phase, update in (("rprop", train._rprop), ("adam", train._adam)):
        rows = [i for i, c in enumerate(chunks) if (c.steps < SWITCH) == (phase == "rprop")]
        if not rows:
            continue
        mine = [chunks[i] for i in rows]
        for c in mine:
            if c.steps == SWITCH:  # fresh Adam moments at the switch
                c.state = (torch.zeros_like(c.params), torch.zeros_like(c.params))
        params = torch.stack([c.params for c in mine])  # (b, p)
        first, second = (torch.stack(part) for part in zip(*(c.state for c in mine)))
        offset = 0 if phase == "rprop" else SWITCH
        steps = torch.tensor([c.steps - offset for c in mine], dtype=torch.float32, device=g.device)[:, None]
        first, second = update(params, first, second, g[rows], steps, unit, replace(self.config, optimizer=phase))
        for i, c in enumerate(mine):
            c.params, c.state = params[i], (first[i], second[i])
            c.steps += 1


train.MemoryTrainer._step = hybrid_step
sys.argv[0] = "hybrid_probe.py"
probe_setting.main()
