"""The decode loop's numerics: the in-place KV cache and the weight-major linears."""

import torch
from transformers import AutoModelForCausalLM

from llmzip.kvcache import AppendLayer, SlidingAppendLayer, append_cache
from llmzip.model import weight_major_linears


def _steps(model, ids: torch.Tensor, cache) -> list:
    """Each step's (b, V) logits, feeding ``ids`` (B, T) a token at a time; halfway, rows
    1 and 3 leave the batch (the decoder's drop rule)."""
    out = model(input_ids=ids[:, :1], cache=cache, use_cache=True)
    logits, rows = [out.logits[:, -1]], torch.arange(ids.shape[0])
    for t in range(1, ids.shape[1]):
        if t == ids.shape[1] // 2:
            keep = torch.tensor([0, 2, 4])
            out.cache.batch_select_indices(keep)
            rows = rows[keep]
        out = model(input_ids=ids[rows, t : t + 1], cache=out.cache, use_cache=True)
        logits.append(out.logits[:, -1])
    return logits


def test_the_append_cache_gives_transformers_own_cache_logits_bit_for_bit(tiny_model_dir):
    """Past the fixture model's sliding window (64) and across a batch select."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    ids = torch.randint(3, model.config.vocab_size, (5, 150), generator=torch.Generator().manual_seed(0))
    cache = append_cache(model)
    assert [type(layer) for layer in cache.layers] == [SlidingAppendLayer, AppendLayer]
    with torch.no_grad():
        theirs, ours = _steps(model, ids, None), _steps(model, ids, cache)
    assert all(torch.equal(a, b) for a, b in zip(theirs, ours))
    assert cache.get_seq_length() == 150


def test_weight_major_linears_round_like_f_linear_and_leave_training_and_wide_passes_alone(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    ids = torch.randint(3, model.config.vocab_size, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(input_ids=ids).logits  # (3, 20, V)
        steps_before = model(input_ids=ids[:, :2]).logits  # 6 rows: a decode step's width
    weight_major_linears(model)
    with torch.no_grad():
        after = model(input_ids=ids).logits  # 60 rows: F.linear
        steps_after = model(input_ids=ids[:, :2]).logits
    assert torch.equal(before, after)
    assert torch.allclose(steps_before, steps_after, rtol=0, atol=1e-5)
    linears = [module for module in model.modules() if isinstance(module, torch.nn.Linear)]
    assert linears and all("forward" in vars(module) for module in linears)
    embeds = model.get_input_embeddings()(ids[:, :2]).detach().requires_grad_(True)  # training: autograd on
    trained = model(inputs_embeds=embeds).logits
    trained.sum().backward()
    assert torch.equal(trained.detach(), steps_before) and embeds.grad is not None
