"""decode(): the one greedy decoder used by verification and extract."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmzip.decode import TEMPLATE, DecodeResult, decode, prompt_embeddings
from llmzip.train import MemoryTrainer, TrainConfig

FOX = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.eval().requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def fox(tiny):
    """A trained fp16 vector for FOX and its ids."""
    model, tokenizer = tiny
    ids = tokenizer(FOX, add_special_tokens=False).input_ids
    (result,) = MemoryTrainer(model, TrainConfig(lr=1.0, train_dtype="float32")).train([ids])
    assert result.accepted
    return result.vector, ids


def test_template_is_a_recorded_name():
    assert TEMPLATE == "bos+mem"


def test_decode_reproduces_a_trained_vector(tiny, fox):
    model, tokenizer = tiny
    vector, ids = fox
    result = decode(model, vector, len(ids))
    assert isinstance(result, DecodeResult)
    assert result.token_ids == ids
    assert tokenizer.decode(result.token_ids) == FOX
    assert result.min_margin > 0


def test_decode_is_deterministic(tiny, fox):
    model, _ = tiny
    vector, ids = fox
    assert decode(model, vector, len(ids)) == decode(model, vector, len(ids))


def test_kv_cache_matches_a_full_teacher_forced_pass(tiny, fox):
    """The cached path gives the same tokens and, to rounding, the same margin as one
    full forward over the prompt and the decoded tokens."""
    model, _ = tiny
    vector, ids = fox
    result = decode(model, vector, len(ids))
    text = model.get_input_embeddings()(torch.tensor([result.token_ids[:-1]]))  # (1, T-1, d)
    embeds = torch.cat([prompt_embeddings(model, vector.float()[None]), text], dim=1)  # (1, T+1, d)
    with torch.no_grad():
        logits = model(inputs_embeds=embeds).logits[0, 1:]  # (T, V)
    assert logits.argmax(-1).tolist() == result.token_ids
    top = logits.topk(2, dim=-1).values
    assert (top[:, 0] - top[:, 1]).min().item() == pytest.approx(result.min_margin, abs=1e-4)


def test_prefix_returns_exactly_n_tokens(tiny, fox):
    model, _ = tiny
    vector, ids = fox
    assert decode(model, vector, 3).token_ids == ids[:3]


@pytest.mark.parametrize(
    "vector, n_tokens",
    [
        (torch.zeros(64, dtype=torch.float32), 4),  # not the stored dtype
        (torch.zeros(1, 64, dtype=torch.float16), 4),  # not one vector
        (torch.zeros(64, dtype=torch.float16), 0),
    ],
)
def test_decode_rejects_bad_arguments(tiny, vector, n_tokens):
    model, _ = tiny
    with pytest.raises(ValueError):
        decode(model, vector, n_tokens)
