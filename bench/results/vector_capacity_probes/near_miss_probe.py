"""Probe: how many positions of a chunk still fall short of the margin as training goes on.

Trains the GPL-3 preamble's chunks (the codec's own 64-token split) at one memory-int form and
logs, at every full-vocabulary check, how many positions have a target-vs-runner-up gap below
0.5 (the training margin) and below 0 (wrong). Tells what near-miss corrections would buy.

    python near_miss_probe.py BITS MAX_STEPS [CHUNK_TOKENS] > near_miss_intBITS.jsonl
"""
import json
import sys

import torch

import llmzip.train as train
from gpl_chunks import load
from llmzip.config import TrainConfig
from llmzip.kinds.memory_int import IntVectorForm, offset_for

bits, max_steps = int(sys.argv[1]), int(sys.argv[2])
chunk_tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 64
loaded, chunks, ids = load(chunk_tokens=chunk_tokens)
fp = loaded.identity.weights_fingerprint

last_gap = {}
original_stats = train._chunk_stats


def stats(logits, targets, row, lengths, *weighting):
    out = original_stats(logits, targets, row, lengths, *weighting)
    with torch.no_grad():
        top = logits.topk(2, dim=-1)
        hit = top.indices[:, 0] == targets
        runner = torch.where(hit, top.values[:, 1], top.values[:, 0])
        last_gap["gap"], last_gap["row"] = logits.gather(1, targets[:, None])[:, 0] - runner, row
    return out


train._chunk_stats = stats
original_full = train.MemoryTrainer._full_check


def full_check(self, hidden, targets, row, lengths, mask, active):
    out = original_full(self, hidden, targets, row, lengths, mask, active)
    if mask.any():
        gap, r = last_gap["gap"], last_gap["row"]
        for i in mask.nonzero()[:, 0].tolist():
            g = gap[r == i]
            print(json.dumps({"chunk": active[i].index, "step": active[i].steps, "short": int((g < 0.5).sum()),
                              "wrong": int((g < 0).sum()), "n": len(g)}), flush=True)
    return out


train.MemoryTrainer._full_check = full_check
form = IntVectorForm(640, bits, offset_for(fp), 640)
trainer = train.MemoryTrainer(loaded.model, TrainConfig(max_steps=max_steps), start=train.fitted_start(fp), form=form)
for index, result in enumerate(trainer.train(ids)):
    print(json.dumps({"chunk": index, "done": result.steps, "accepted": result.accepted, "bytes": len(chunks[index].data),
                      "tokens": len(ids[index])}), flush=True)
