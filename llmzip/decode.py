"""The one canonical greedy decoder: memory vector + token count -> token ids.

Compress-time verification and extract both call :func:`decode`, so a chunk is accepted
only if the exact computation that will later restore it has already restored it once.

Prompt layout (:data:`TEMPLATE`): ``"bos+mem"``. The model sees its BOS embedding, then
the memory vector, then the tokens generated so far; the logits at the memory vector's
position predict the first token. Keeping BOS gives the model the attention sink it was
trained with, so the memory vector does not have to play that role as well: with the
vector alone, training took 2-2.5x more steps (BENCHMARKS.md, "Engine speed").

Fixed numerics, in the order they matter:

* the model's own dtype (``load_model`` loads fp32, and the archive records it) and
  attention implementation (pinned by ``load_model``, recorded in the archive);
* batch 1, prompt processed in one forward pass, then one token per step with the KV
  cache. The cache changes the matmul shapes compared with recomputing the whole
  sequence, so logits differ in the last bits; training already differs from decoding
  (batched, teacher-forced, a candidate softmax, possibly bf16), which is why every position must win by a
  margin and why the stored vector is re-checked here. With the cache a chunk of ``n``
  tokens costs ``n`` single-token steps instead of ``n`` growing full passes (2.8x
  faster for 23 tokens on Gemma 3 270M; BENCHMARKS.md);
* the vector is used exactly as stored (fp16), converted to the model's dtype, which is
  exact for fp16 -> fp32.

No EOS handling: the archive stores each chunk's token count, so decoding cannot run away.
"""

from dataclasses import dataclass

import torch

TEMPLATE = "bos+mem"


@dataclass(frozen=True)
class DecodeResult:
    token_ids: list[int]
    min_margin: float  # smallest top-1 minus top-2 logit gap over all generated positions


def prompt_embeddings(model, vectors: torch.Tensor) -> torch.Tensor:
    """The :data:`TEMPLATE` prefix for a batch of memory vectors: (B, d) -> (B, 2, d).

    Shared with training so that both build the prompt the same way. BOS goes through
    the model's embedding module (Gemma scales by sqrt(d) there); the memory vectors are
    already in that scaled space and bypass it.
    """
    embed = model.get_input_embeddings()
    bos = torch.tensor([model.config.bos_token_id], device=vectors.device)
    bos_embedding = embed(bos).to(vectors.dtype)  # (1, d)
    return torch.stack([bos_embedding.expand_as(vectors), vectors], dim=1)  # (B, 2, d)


def top2_gap(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 logit over the last dimension: (..., V) -> (...)."""
    top = logits.topk(2, dim=-1).values  # (..., 2)
    return top[..., 0] - top[..., 1]


@torch.no_grad()
def decode(model, vector: torch.Tensor, n_tokens: int) -> DecodeResult:
    """Greedily generate ``n_tokens`` tokens from one stored memory vector.

    ``vector`` is the (d,) float16 tensor exactly as stored. Returns the token ids and
    the smallest top-1/top-2 logit gap seen, which tells how close the decode came to
    flipping a token under slightly different numerics.
    """
    if vector.dim() != 1 or vector.dtype != torch.float16:
        raise ValueError(f"expected a (d,) float16 vector, got {tuple(vector.shape)} {vector.dtype}")
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be at least 1, got {n_tokens}")
    model.eval()
    device = model.get_input_embeddings().weight.device
    dtype = model.get_input_embeddings().weight.dtype
    embeds = prompt_embeddings(model, vector.to(device=device, dtype=dtype)[None])  # (1, 2, d)
    out = model(inputs_embeds=embeds, use_cache=True)
    token_ids: list[int] = []
    min_margin = float("inf")
    for step in range(n_tokens):
        logits = out.logits[0, -1].float()  # (V,)
        min_margin = min(min_margin, top2_gap(logits).item())
        token_ids.append(int(logits.argmax()))
        if step + 1 < n_tokens:
            next_id = torch.tensor([[token_ids[-1]]], device=device)  # (1, 1)
            out = model(input_ids=next_id, cache=out.cache, use_cache=True)
    return DecodeResult(token_ids=token_ids, min_margin=min_margin)
