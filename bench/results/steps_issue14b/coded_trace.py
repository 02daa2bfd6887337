"""Scratch probe for give-up calibration: every eligible 64-token chunk of the given texts,
trained at the codec's defaults of attempt 19 (the coded form, Adam, up to 16 corrections, one
per 50 steps: the schedule coded_trace.jsonl.gz was recorded with) with give-up off, tracing each
chunk's loss, and its loss without its correctable positions, at every step
(probe_setting.trace_steps), to replay give-up rules on.

    python coded_trace.py OUT.jsonl TEXT [TEXT ...]
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/, for probe_setting
from llmzip.chunking import split
from llmzip.codec import LmzCompressor
from llmzip.config import TrainConfig
from probe_setting import trace_steps

torch.set_num_threads(1)
out_path, texts = sys.argv[1], sys.argv[2:]
# settled loss is computed only when give-up is on: ask for it with a window no chunk reaches
compressor = LmzCompressor(train=TrainConfig(giveup_window=10**9, corrections=16, correction_steps=50))
tokenizer = compressor.loaded.tokenizer
ids, names = [], []
for text in texts:
    for i, chunk in enumerate(c for c in split(Path(text).read_bytes(), tokenizer, max_tokens=64) if c.eligible):
        ids.append(chunk.token_ids)
        names.append(f"{Path(text).stem}:{i}")
trainer = compressor.trainer
trace_steps(trainer, names, open(out_path, "w"))
results = trainer.train(ids, on_chunk_done=lambda i, r: print(names[i], r.steps, "accepted", r.accepted,
                                                              len(r.corrections), len(r.payload), flush=True))
print("steps", [r.steps for r in results], "accepted", sum(r.accepted for r in results), flush=True)
