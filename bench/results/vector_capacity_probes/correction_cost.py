"""Probe: what a corrected token costs under the model, against a token-id varint.

For every correction of a kind-5 archive of the default model (the compat fixture of the
GPL-3 preamble), the vector is rebuilt and its chunk run teacher-forced (the same logits
as the decode with the corrections forced, up to last-bit drift); at each corrected
position it prints -log2 softmax(true token) (what an ideal coder under the model pays),
the token's rank among the logits, and the bytes of its varint in kind 5.

    python correction_cost.py [ARCHIVE] > correction_cost.jsonl
"""
import json
import math
import sys

import torch

from gpl_chunks import GPL, load
from llmzip import container
from llmzip.decode import prompt_embeddings
from llmzip.kinds import memory_int, memory_int_coded

archive_path = sys.argv[1] if len(sys.argv) > 1 else GPL.replace(".txt", "-coded.lmz")
loaded, chunks, ids = load()
archive = container.unpack(open(archive_path, "rb").read())
offset = memory_int.offset_for(loaded.identity.weights_fingerprint)
model = loaded.model
with torch.no_grad():
    for index, chunk in enumerate(archive.chunks):
        if not isinstance(chunk, memory_int_coded.CodedIntVectorChunk):
            continue
        vector = torch.from_numpy(memory_int.rebuild([chunk], archive.header.vector_dim, offset))  # (1, d)
        tokens = torch.tensor(ids[index])[None]  # (1, n)
        embeds = torch.cat([prompt_embeddings(model, vector), model.get_input_embeddings()(tokens[:, :-1])], 1)
        logits = model(inputs_embeds=embeds).logits[0, 1:].float()  # (n, V): position p predicts token p
        log_probs = logits.log_softmax(-1)
        for position, token in chunk.corrections:
            print(json.dumps({"chunk": index, "position": position, "token": token,
                              "bits": -log_probs[position, token].item() / math.log(2),
                              "rank": int((logits[position] > logits[position, token]).sum()),
                              "varint_bytes": len(container.varint(token))}), flush=True)
