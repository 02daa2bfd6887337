"""Probe: stored bytes and exactness of memory-int-coded vectors under one training variant.

Trains the GPL-3 preamble's first 8 chunks (the codec's 64-token split; one batch) with
CodedIntVectorForm at 640 x BITS and the trainer's defaults (corrections included), with the
grid's outer level at CLIP x RMS, and prints per chunk: steps, accepted, corrections, coded
coefficient bytes and the whole payload's bytes, tokens and text bytes.

    python coded_form_probe.py BITS CLIP MAX_STEPS > coded_BITS_CLIP.jsonl
"""
import json
import sys

import llmzip.train as train
from gpl_chunks import load
from llmzip.config import TrainConfig
from llmzip.kinds import memory_int
from llmzip.kinds.memory_int_coded import CodedIntVectorForm, encode_coefficients

bits, clip, max_steps = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
memory_int.CLIP[bits] = clip
loaded, chunks, ids = load(8)
fp = loaded.identity.weights_fingerprint
config = TrainConfig(max_steps=max_steps)
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
