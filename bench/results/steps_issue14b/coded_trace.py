"""Scratch probe for give-up calibration: every eligible 64-token chunk of the given texts,
trained at the codec's defaults (the coded form, Adam) with give-up off, tracing each
chunk's loss without its correctable positions at every step, to replay give-up rules on.

    python coded_trace.py OUT.jsonl TEXT [TEXT ...]
"""
import json
import sys
from pathlib import Path

import torch

from llmzip.chunking import split
from llmzip.codec import LmzCompressor
from llmzip.config import TrainConfig

torch.set_num_threads(1)
out_path, texts = sys.argv[1], sys.argv[2:]
# settled loss is computed only when give-up is on: ask for it with a window no chunk reaches
compressor = LmzCompressor(train=TrainConfig(giveup_window=10**9))
tokenizer = compressor.loaded.tokenizer
ids, names = [], []
for text in texts:
    for i, chunk in enumerate(c for c in split(Path(text).read_bytes(), tokenizer, max_tokens=64) if c.eligible):
        ids.append(chunk.token_ids)
        names.append(f"{Path(text).stem}:{i}")
trainer = compressor.trainer
evaluate = trainer._evaluate
out = open(out_path, "w")


def traced(vectors, active):
    e = evaluate(vectors, active)
    for i, c in enumerate(active):
        out.write(json.dumps({"row": names[c.index], "step": c.steps, "loss": round(e.loss[i].item(), 4),
                              "settled": round(e.settled_loss[i].item(), 4), "checked": bool(e.checked[i]),
                              "short": len(c.short()) if bool(e.checked[i]) else None}) + "\n")
    out.flush()
    return e


trainer._evaluate = traced
results = trainer.train(ids, on_chunk_done=lambda i, r: print(names[i], r.steps, "accepted", r.accepted,
                                                              len(r.corrections), len(r.payload), flush=True))
print("steps", [r.steps for r in results], "accepted", sum(r.accepted for r in results), flush=True)
