"""decode() / decode_batch(): the one greedy decoder used by verification and extract."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmzip.decode import TEMPLATE, DecodeResult, batch_schedule, decode, decode_batch, prompt_embeddings, top2_gap
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
        (torch.zeros(64, dtype=torch.float64), 4),  # not a stored dtype (fp16, or float32 rebuilt from low rank)
        (torch.zeros(1, 64, dtype=torch.float16), 4),  # not one vector
        (torch.zeros(64, dtype=torch.float16), 0),
    ],
)
def test_decode_rejects_bad_arguments(tiny, vector, n_tokens):
    model, _ = tiny
    with pytest.raises(ValueError):
        decode(model, vector, n_tokens)


# --- decode_batch ---------------------------------------------------------------------

# Token counts that differ per row: 1 (prompt pass only), ones that stop mid-batch, and 70,
# past the fixture model's 64-position sliding window, so dropping rows also slices the
# sliding-window layer's cache after it has started to roll.
COUNTS = [12, 70, 1, 33, 70, 5]


@pytest.fixture(scope="module")
def rows(tiny_model, fox):
    """(B, d) fp16 vectors: the trained FOX vector and random ones scaled like embeddings."""
    model = tiny_model.model
    vector, _ = fox
    embed = model.get_input_embeddings()
    rms = embed(torch.arange(embed.weight.shape[0])).pow(2).mean().sqrt()
    generator = torch.Generator().manual_seed(13)
    others = torch.randn(len(COUNTS) - 1, vector.shape[0], generator=generator) * rms  # (B-1, d)
    return torch.cat([vector[None], others.half()])  # (B, d) float16


@torch.no_grad()
def reference_decode(model, vector, n_tokens):
    """The batch-1 decoder of llmzip 0.1.0, which verified its archives (argmax, topk,
    .item() per step), kept here to pin the B = 1 behaviour."""
    embeds = prompt_embeddings(model, vector.float()[None])  # (1, 2, d)
    out = model(inputs_embeds=embeds, use_cache=True)
    token_ids, min_margin = [], float("inf")
    for step in range(n_tokens):
        logits = out.logits[0, -1].float()  # (V,)
        min_margin = min(min_margin, top2_gap(logits).item())
        token_ids.append(int(logits.argmax()))
        if step + 1 < n_tokens:
            out = model(input_ids=torch.tensor([[token_ids[-1]]]), cache=out.cache, use_cache=True)
    return DecodeResult(token_ids=token_ids, min_margin=min_margin)


def assert_same(got, expected, tolerance=1e-4):
    assert [r.token_ids for r in got] == [r.token_ids for r in expected]
    for g, e in zip(got, expected):
        assert g.min_margin == pytest.approx(e.min_margin, abs=tolerance)


def test_batch_schedule_drops_each_row_after_its_last_token():
    assert batch_schedule([2, 1, 3]) == [[0, 1, 2], [0, 2], [2]]
    assert batch_schedule([1]) == [[0]]


def test_batch_equals_batch_one_for_rows_of_different_lengths(tiny_model, rows, fox):
    model = tiny_model.model
    batched = decode_batch(model, rows, COUNTS)
    assert [len(r.token_ids) for r in batched] == COUNTS
    assert_same(batched, [decode(model, v, n) for v, n in zip(rows, COUNTS)])
    _, ids = fox
    assert batched[0].token_ids == ids[: COUNTS[0]]


def test_batch_one_equals_the_previous_decoder_bit_for_bit(tiny_model, rows):
    model = tiny_model.model
    for vector, n in zip(rows, COUNTS):
        expected = reference_decode(model, vector, n)
        assert decode(model, vector, n) == expected
        assert decode_batch(model, vector[None], [n]) == [expected]


@pytest.mark.parametrize("order", [[5, 4, 3, 2, 1, 0], [2, 0, 4, 1, 5, 3]])
def test_a_row_does_not_depend_on_its_batch_mates_order(tiny_model, rows, order):
    model = tiny_model.model
    base = decode_batch(model, rows, COUNTS)
    shuffled = decode_batch(model, rows[order], [COUNTS[i] for i in order])
    assert_same(shuffled, [base[i] for i in order])
    subset = decode_batch(model, rows[order[:3]], [COUNTS[i] for i in order[:3]])
    assert_same(subset, [base[i] for i in order[:3]])


def test_decode_batch_is_deterministic(tiny_model, rows):
    model = tiny_model.model
    assert decode_batch(model, rows, COUNTS) == decode_batch(model, rows, COUNTS)


@pytest.mark.parametrize(
    "vectors, n_tokens",
    [
        (torch.zeros(2, 64, dtype=torch.float64), [3, 4]),  # not a stored dtype (fp16, or float32 rebuilt from low rank)
        (torch.zeros(64, dtype=torch.float16), [3]),  # one vector, not a batch
        (torch.zeros(1, 2, 64, dtype=torch.float16), [3]),  # too many dimensions
        (torch.zeros(2, 32, dtype=torch.float16), [3, 4]),  # not the model's width
        (torch.zeros(0, 64, dtype=torch.float16), []),  # empty batch
        (torch.zeros(2, 64, dtype=torch.float16), [3]),  # fewer counts than vectors
        (torch.zeros(2, 64, dtype=torch.float16), [3, 4, 5]),  # more counts than vectors
        (torch.zeros(2, 64, dtype=torch.float16), [3, 0]),
        (torch.zeros(2, 64, dtype=torch.float16), [3, -1]),
        (torch.zeros(2, 64, dtype=torch.float16), [3, 2.0]),  # not an int
        ([[0.0] * 64], [3]),  # not a tensor
    ],
)
def test_decode_batch_rejects_bad_arguments(tiny_model, vectors, n_tokens):
    with pytest.raises(ValueError):
        decode_batch(tiny_model.model, vectors, n_tokens)


def test_pick_equals_argmax_and_top2_gap_including_ties():
    from llmzip.decode import _pick_

    logits = torch.randn(5, 300, generator=torch.Generator().manual_seed(0))  # (b, V)
    logits[1, 7] = logits[1, 250] = logits[1].max() + 1  # a tie for the first place: argmax is 7, gap 0
    logits[2, 0] = logits[2].max() + 2  # the maximum at the first index
    logits[3, -1] = logits[3].max() + 0.5  # ... and at the last
    expected_ids, expected_gaps = logits.argmax(-1), top2_gap(logits)
    ids, gaps = _pick_(logits.clone())
    assert torch.equal(ids, expected_ids) and ids[1] == 7
    assert torch.equal(gaps, expected_gaps) and gaps[1] == 0


def test_one_dtype_map_for_archives_and_training():
    from llmzip.config import TRAIN_DTYPES
    from llmzip.decode import DTYPES, torch_dtype
    from llmzip.errors import FormatError

    assert torch_dtype("float32") is torch.float32 and torch_dtype("float16") is torch.float16
    assert set(TRAIN_DTYPES) - {"auto"} <= set(DTYPES)
    with pytest.raises(FormatError, match="unknown model dtype 'float64'"):
        torch_dtype("float64")


def test_the_lm_kind_decodes_in_this_modules_loop(tiny_model, monkeypatch):
    """One KV-cache loop: kind lm's decode runs through run_rows, with the same drop rule
    (the steps it runs are batch_schedule's); its writer runs one teacher-forced pass
    instead (scheme 3), never the loop."""
    import llmzip.decode
    from llmzip.kinds import lm

    steps = []
    real = llmzip.decode.run_rows

    def counting(model, prompt, n_tokens, choose, **kwargs):
        def counted(step, rows, logits):
            steps.append(rows.tolist())
            return choose(step, rows, logits)

        return real(model, prompt, n_tokens, counted, **kwargs)

    monkeypatch.setattr(llmzip.decode, "run_rows", counting)
    token_lists = [[5, 9, 11], [7], [3, 4]]
    coded = lm.KIND.encode(tiny_model, token_lists)
    assert steps == []
    chunks = [lm.LmChunk(code, len(ids), len(ids), 0) for code, ids in zip(coded, token_lists)]
    assert lm.KIND.decode(tiny_model, chunks, 8) == token_lists
    assert steps == batch_schedule([3, 1, 2])
