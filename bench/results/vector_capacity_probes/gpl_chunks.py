"""What the probes here share: the default model (one torch thread) and the GPL-3
preamble's eligible chunks, as the codec splits them."""

import torch

from llmzip import chunking
from llmzip.model import load_model

GPL = "/work/main/fixtures/compat/default-model-memory-int.txt"


def load(count=None, chunk_tokens=64):
    """(loaded model, the first ``count`` chunks (all: None), their token ids as lists)."""
    torch.set_num_threads(1)
    loaded = load_model("default")
    data = open(GPL, "rb").read()
    chunks = [c for c in chunking.split(data, loaded.tokenizer, max_tokens=chunk_tokens) if c.eligible][:count]
    return loaded, chunks, [list(c.token_ids) for c in chunks]
