"""Probe: do the GPL-3 chunks the defaults did not hold fit with more corrections?

Trains the chosen chunks (indices in the codec's split) at the default coded form (4 bits,
grid 6.0, sparsity 1.0) with the given correction budget, and prints one JSON line per
finished chunk: steps, whether it was stored, corrections, payload bytes.

    python corrections_probe.py CHUNKS CORRECTIONS CORRECTION_STEPS MAX_STEPS [SPARSITY]
    e.g. python corrections_probe.py 7,10,11 24 50 1500 > corrections_24_50.jsonl
"""
import json
import sys

import llmzip.train as train
from gpl_chunks import load
from llmzip.config import TrainConfig
from llmzip.kinds import memory_int
from llmzip.kinds.memory_int_coded import CodedIntVectorForm

picked = [int(i) for i in sys.argv[1].split(",")]
corrections, correction_steps, max_steps = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sparsity = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
loaded, chunks, ids = load()
fp = loaded.identity.weights_fingerprint
form = CodedIntVectorForm(640, 4, memory_int.offset_for(fp), 640, 6.0, sparsity)
config = TrainConfig(max_steps=max_steps, corrections=corrections, correction_steps=correction_steps)
trainer = train.MemoryTrainer(loaded.model, config, start=train.fitted_start(fp), form=form)


def report(index, result):
    print(json.dumps({"chunk": picked[index], "steps": result.steps, "accepted": result.accepted,
                      "corrections": len(result.corrections), "payload": len(result.payload or b""),
                      "tokens": len(ids[picked[index]]), "text": len(chunks[picked[index]].data),
                      "margin": result.decode_min_margin}), flush=True)


trainer.train([ids[i] for i in picked], on_chunk_done=report)
