"""Probe: stored bytes and exactness of memory-int-coded vectors under one training variant.

Trains the GPL-3 preamble's first 8 chunks (the codec's 64-token split; one batch) with
CodedIntVectorForm at 640 x BITS and the trainer's defaults (corrections included), with the
grid's outer level at CLIP x RMS, and prints per chunk: steps, accepted, corrections, coded
coefficient bytes and the whole payload's bytes, tokens and text bytes.

    python coded_form_probe.py BITS CLIP MAX_STEPS [LR_FLOOR] > coded_BITS_CLIP.jsonl

LR_FLOOR < 1 decays each chunk's learning rate linearly to LR_FLOOR x lr at MAX_STEPS (a
variant of the trainer's constant rate, patched in here only).
"""
import json
import sys

import torch

import llmzip.train as train
from llmzip import chunking
from llmzip.config import TrainConfig
from llmzip.kinds import memory_int
from llmzip.kinds.memory_int_coded import CodedIntVectorForm, encode_coefficients
from llmzip.model import load_model

bits, clip, max_steps = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
floor = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
memory_int.CLIP[bits] = clip
torch.set_num_threads(1)
loaded = load_model("default")
fp = loaded.identity.weights_fingerprint
data = open("/work/main/fixtures/compat/default-model-memory-int.txt", "rb").read()
chunks = [c for c in chunking.split(data, loaded.tokenizer, max_tokens=64) if c.eligible][:8]
ids = [list(c.token_ids) for c in chunks]
config = TrainConfig(max_steps=max_steps)
if floor < 1:
    original = train.MemoryTrainer._adam_step

    def decayed(self, active, g):
        """Adam's step for each chunk, scaled by 1 - (1 - floor) x its share of max_steps."""
        before = [c.params.clone() for c in active]
        original(self, active, g)
        for chunk, start in zip(active, before):
            share = min(chunk.steps / max_steps, 1.0)
            chunk.params = start + (chunk.params - start) * (1 - (1 - floor) * share)

    train.MemoryTrainer._adam_step = decayed
form = CodedIntVectorForm(640, bits, memory_int.offset_for(fp), 640)
trainer = train.MemoryTrainer(loaded.model, config, start=train.fitted_start(fp), form=form)


def report(index, result):
    q = memory_int_coded_q(result)
    print(json.dumps({"chunk": index, "steps": result.steps, "accepted": result.accepted,
                      "corrections": len(result.corrections), "payload": len(result.payload),
                      "coded": len(encode_coefficients(q, bits)), "tokens": len(ids[index]),
                      "text": len(chunks[index].data), "margin": result.decode_min_margin}), flush=True)


def memory_int_coded_q(result):
    from llmzip.kinds.memory_int_coded import parse_payload, decode_coefficients
    rank, b, scale, corrections, code = parse_payload(result.payload, len(ids[0]) + 64, 640, "probe")
    return decode_coefficients(code, rank, b)


trainer.train(ids, on_chunk_done=report)
