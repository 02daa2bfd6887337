"""Probe: a fixed quantiser step and an L1 pull towards the offset, for fewer coded bytes.

memory-int-coded vectors scale their grid to each vector's RMS, so the coefficients'
entropy is whatever training leaves (3.4 bits at 4 bits). Here the grid step is one fixed
STEP for every vector (still stored as the record's scale) and the loss gains
LAMBDA x mean(|z|) / STEP, which pulls coordinates the text does not need back to the
offset (coefficient 0, the cheapest symbol under the adaptive code). Same chunks, trainer
defaults and output as coded_form_probe.py.

    python sparse_probe.py STEP LAMBDA MAX_STEPS > sparse_STEP_LAMBDA.jsonl
"""
import json
import sys

import torch

import llmzip.train as train
from gpl_chunks import load
from llmzip.config import TrainConfig
from llmzip.kinds import memory_int
from llmzip.kinds.memory_int_coded import CodedIntVectorForm, decode_coefficients, parse_payload

step, weight, max_steps = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
loaded, chunks, ids = load(8)
fp = loaded.identity.weights_fingerprint


class SparseForm(CodedIntVectorForm):
    def _quantise(self, z):
        scale = torch.full_like(z[:, :1], step).half().float()  # (B, 1)
        return scale, (z / scale).round().clamp(-memory_int.qmax(self.bits), memory_int.qmax(self.bits))

    def vectors(self, z):
        self.last_z = z
        return super().vectors(z)


form = SparseForm(640, 4, memory_int.offset_for(fp), 640)
trainer = train.MemoryTrainer(loaded.model, TrainConfig(max_steps=max_steps), start=train.fitted_start(fp), form=form)
print(json.dumps({"embed_rms": trainer.embed_rms}), flush=True)
original = train.MemoryTrainer._evaluate


def evaluate(self, vectors, active):
    evaluation = original(self, vectors, active)
    return evaluation._replace(losses=evaluation.losses + weight * form.last_z.abs().mean(-1) / step)


train.MemoryTrainer._evaluate = evaluate


def report(index, result):
    rank, bits, scale, corrections, code = parse_payload(result.payload, 10**6, 640, "probe")
    q = decode_coefficients(code, rank, bits)
    print(json.dumps({"chunk": index, "steps": result.steps, "accepted": result.accepted,
                      "corrections": len(result.corrections), "payload": len(result.payload), "coded": len(code),
                      "zeros": int((q == 0).sum()), "tokens": len(ids[index]), "text": len(chunks[index].data),
                      "margin": result.decode_min_margin}), flush=True)


trainer.train(ids, on_chunk_done=report)
