"""MemoryTrainer: batched training of memory vectors with per-chunk stop and verification.

The tiny fixture model has memorised a small corpus: a memory vector can steer it to a
corpus passage within tens of steps, while unseen text does not fit in one vector.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmzip.decode import decode, decode_batch
from llmzip.train import ChunkResult, MemoryTrainer, TrainConfig, _chunk_stats, _Training

# Corpus passages of different lengths (5 to 30 tokens) that the fixture can reproduce.
PASSAGES = [
    "The quick brown fox",
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.",
    "How vexingly quick daft zebras jump!",
    "El veloz murciélago hindú comía feliz cardillo y kiwi.",
]
UNSEEN = "Zygote plumbers negotiate vivid xylophones at midnight in Reykjavik."
NEAR = "The quick brown fox jumps over the lazy cat. Pack my box with five dozen liquor jugs."  # one word off


def fast(**overrides) -> TrainConfig:
    """fp32 keeps the tiny model's runs comparable across batch shapes; lr suits it."""
    return TrainConfig(**{"lr": 1.0, "train_dtype": "float32", "max_steps": 200, **overrides})


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.eval().requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


@pytest.fixture(scope="module")
def passages(tiny):
    _, tokenizer = tiny
    return [ids_of(tokenizer, text) for text in PASSAGES]


@pytest.fixture(scope="module")
def batch_run(tiny, passages):
    """All passages in one batch, with the callbacks recorded."""
    model, _ = tiny
    done, steps = [], []
    results = MemoryTrainer(model, fast(batch_size=len(passages))).train(
        passages,
        on_chunk_done=lambda index, result: done.append((index, result)),
        on_step=lambda step, n_active, loss: steps.append((step, n_active, loss)),
    )
    return results, done, steps


@pytest.mark.parametrize("candidates", [0, 32])  # full-vocabulary softmax, candidate softmax
def test_short_chunk_trains_to_exact_and_decodes_from_fp16(tiny, candidates):
    model, tokenizer = tiny
    ids = ids_of(tokenizer, "The quick brown fox jumps over the lazy dog.")
    (result,) = MemoryTrainer(model, fast(candidates=candidates)).train([ids])
    assert isinstance(result, ChunkResult)
    assert result.vector.dtype == torch.float16 and result.vector.shape == (model.config.hidden_size,)
    assert result.vector.device.type == "cpu"
    assert result.exact and result.accepted and result.converged
    assert result.token_accuracy == 1.0
    assert result.steps < 50
    decoded = decode(model, result.vector, len(ids))
    assert decoded.token_ids == ids
    assert decoded.min_margin == result.decode_min_margin


def test_batch_of_different_lengths_converges_independently(passages, batch_run):
    results, done, steps = batch_run
    assert len({len(ids) for ids in passages}) == len(passages)
    assert all(r.accepted and r.converged for r in results)
    assert len({r.steps for r in results}) > 1  # each stopped on its own
    # on_chunk_done fires once per chunk, as each finishes, with the chunk's own result
    assert sorted(index for index, _ in done) == list(range(len(passages)))
    assert all(results[index] is result for index, result in done)
    # converged chunks leave the batch
    n_active = [n for _, n, _ in steps]
    assert n_active[0] == len(passages) and n_active[-1] < len(passages)
    assert n_active == sorted(n_active, reverse=True)
    assert len(steps) == max(r.steps for r in results) + 1


def test_results_do_not_depend_on_batch_mates(tiny, passages, batch_run):
    """Alone or in a batch, a chunk starts from the same vector and follows the same
    gradients; only rounding differs, so the outcome and step count agree."""
    model, _ = tiny
    batched, _, _ = batch_run
    trainer = MemoryTrainer(model, fast(batch_size=1))
    for ids, together in zip(passages, batched):
        (alone,) = trainer.train([ids])
        assert alone.accepted == together.accepted
        assert abs(alone.steps - together.steps) <= 1
        torch.testing.assert_close(alone.vector, together.vector, atol=0.05, rtol=0.01)


def test_stopped_chunks_are_verified_in_one_batched_decode(tiny, passages, monkeypatch):
    """Chunks that stop give up their slots and wait to be decoded together (a batch's
    worth, or whatever is left when nothing else trains): one decode for the batch here,
    not one per chunk, and each verdict as the chunk's own decode gives it."""
    import llmzip.train

    model, _ = tiny
    rows = []

    def counting(model, vectors, n_tokens, **kwargs):
        rows.append(len(n_tokens))
        return decode_batch(model, vectors, n_tokens, **kwargs)

    monkeypatch.setattr(llmzip.train, "decode_batch", counting)
    results = MemoryTrainer(model, fast(batch_size=len(passages))).train(passages)
    assert rows == [len(passages)]
    assert all(result.accepted for result in results)
    for ids, result in zip(passages, results):
        alone = decode(model, result.vector, len(ids))
        assert alone.token_ids == ids and alone.min_margin == pytest.approx(result.decode_min_margin, abs=1e-3)


def test_margin_is_honoured(tiny, passages):
    model, _ = tiny
    ids = passages[2]
    (low,) = MemoryTrainer(model, fast(margin=0.5)).train([ids])
    (high,) = MemoryTrainer(model, fast(margin=3.0)).train([ids])
    assert low.converged and high.converged
    assert low.train_min_margin >= 0.5 and high.train_min_margin >= 3.0
    assert high.steps > low.steps
    assert high.decode_min_margin > low.decode_min_margin


def test_chunk_beyond_capacity_fails_within_budget(tiny):
    model, tokenizer = tiny
    ids = ids_of(tokenizer, UNSEEN)
    (result,) = MemoryTrainer(model, fast(max_steps=40)).train([ids])
    assert result.steps == 40
    assert not result.converged and not result.exact and not result.accepted
    assert result.token_accuracy < 1.0 and result.train_min_margin < 0
    assert result.vector.dtype == torch.float16  # still returned, for diagnostics
    assert result.corrections == ()  # a full fp16 vector stores none, whatever config.corrections says


def test_a_chunk_whose_loss_stalls_gives_up_early(tiny, batch_run):
    """UNSEEN's loss stops falling far above giveup_loss: it stops at a give-up check long
    before its budget, as a plain failure (verified, not accepted); the passages, which
    fit, never give up."""
    model, tokenizer = tiny
    ids = ids_of(tokenizer, UNSEEN)
    (result,) = MemoryTrainer(model, fast(max_steps=1000, giveup_window=20)).train([ids])
    assert result.gave_up and not result.converged and not result.accepted
    assert 40 <= result.steps <= 1000 // 5 and result.steps % 20 <= 1  # at a window's end (+1: its full check)
    assert result.loss > fast().giveup_loss
    results, _, _ = batch_run
    assert not any(r.gave_up for r in results) and all(r.accepted for r in results)


@pytest.mark.parametrize("curve, gives_up_at", [
    ([3.91, 3.38, 3.07, 2.63], 200),  # best settled loss per 100 steps of a random-text chunk at the coded default
    ([1.74, 1.52, 0.89, 0.85], None),  # the coded-default chunk that fits latest against its projection (530 steps)
    ([1.71, 1.42, 1.17, 0.90], None),  # the slowest GPL-3 chunk of attempt 16
    ([3.0, 1.4, 0.9], None),  # under giveup_loss: never hopeless, whatever the rate
])
def test_give_up_projects_the_loss_along_a_power_law(curve, gives_up_at):
    """At the defaults the window minima are projected to the budget as loss ~ steps^-k:
    3.38 after 3.91 (steps 100 -> 200) projects 3.38 * (200/1500)^0.21 = 2.2 > 1.5 (an
    exponential at the same rate would say 0.5); 1.52 after 1.74 projects 1.03, a chunk
    that fitted at step 530 (BENCHMARKS.md, attempt 19)."""
    config = TrainConfig()
    chunk = _Training(0, torch.tensor([1]), torch.zeros(2), 0.5, budget=config.max_steps)
    stopped = None
    for loss in curve:
        for _ in range(config.giveup_window):
            chunk.steps += 1
            if chunk.hopeless(loss, config.giveup_window, config.giveup_loss) and stopped is None:
                stopped = chunk.steps
    assert stopped == gives_up_at


@pytest.mark.parametrize("correction_weight", [0.1, 1.0])  # the default weighting, the plain mean
def test_corrections_hold_a_chunk_beyond_capacity(tiny, correction_weight):
    """A form that stores corrections (memory-int-coded) may stop once no more positions
    fall short of the margin than it has earned (one per correction_steps); the stored
    vector then decodes exactly when forced at those positions, with the verify margin
    everywhere else. The fixture model knows the passage NEAR changes one word of."""
    from llmzip.forms import LmCorrectedVectorForm

    model, tokenizer = tiny
    ids = ids_of(tokenizer, NEAR)
    (plain,) = MemoryTrainer(model, fast(max_steps=60)).train([ids])
    assert not plain.accepted  # a full fp16 vector does not hold it in the budget
    config = fast(max_steps=60, corrections=8, correction_steps=10, correction_weight=correction_weight)
    (result,) = MemoryTrainer(model, config, form=LmCorrectedVectorForm(64, 8, None, 64)).train([ids])
    assert result.accepted and result.converged and result.corrections
    assert len(result.corrections) <= result.steps // 10 and result.steps < 60
    assert [token for _, token in result.corrections] == [ids[p] for p, _ in result.corrections]
    decoded = decode(model, result.vector, len(ids), result.corrections)
    assert decoded.token_ids == ids and decoded.min_margin >= config.verify_margin
    assert decode(model, result.vector, len(ids)).token_ids != ids  # the vector alone does not hold it


def test_a_chunk_that_may_correct_weighs_its_worst_positions_less():
    """Each chunk's loss is a weighted mean cross-entropy: its `worst` positions of highest
    cross-entropy count `weight`, the rest 1, and its settled loss is the rest's mean;
    worst 0 is the plain mean, and a chunk with no positions in the call (a full check of
    some chunks) gets 0, not NaN."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 11, generator=generator)  # (N, V): chunk 0 has 3 positions, chunk 1 has 4
    targets = torch.randint(0, 11, (7,), generator=generator)
    row, lengths = torch.tensor([0, 0, 0, 1, 1, 1, 1]), torch.tensor([3, 4])
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    plain = _chunk_stats(logits, targets, row, lengths, torch.tensor([0, 0]), 0.1)[0]
    assert torch.allclose(plain, torch.stack([ce[:3].mean(), ce[3:].mean()]))
    weighted, *_, settled = _chunk_stats(logits, targets, row, lengths, torch.tensor([1, 2]), 0.1)
    for chunk, (part, worst) in enumerate([(ce[:3], 1), (ce[3:], 2)]):
        weights = torch.ones_like(part)
        weights[part.topk(worst).indices] = 0.1
        assert torch.allclose(weighted[chunk], (part * weights).sum() / weights.sum())
        assert torch.allclose(settled[chunk], part.sort().values[: len(part) - worst].mean())  # the others alone
    alone = _chunk_stats(logits[3:], targets[3:], row[3:], lengths, torch.tensor([1, 2]), 0.1)[0]
    assert alone[0] == 0 and torch.allclose(alone[1], weighted[1])


def test_a_full_vector_ignores_the_correction_weight(tiny, passages):
    """A form that stores no corrections must hold every position, so its loss stays the
    plain mean whatever correction_weight says: the same steps and vector."""
    model, _ = tiny
    (weighted,) = MemoryTrainer(model, fast(correction_weight=0.1)).train(passages[:1])
    (plain,) = MemoryTrainer(model, fast(correction_weight=1.0)).train(passages[:1])
    assert weighted.steps == plain.steps and torch.equal(weighted.vector, plain.vector)


def test_the_optimiser_follows_the_form_unless_named(tiny):
    """optimizer=None: Rprop for a form that stores corrections, when some are allowed (its
    chunks stop early, where Rprop leads), Adam where every position must clear the
    margin; a named optimiser is kept either way."""
    from llmzip.forms import LmCorrectedVectorForm

    model, _ = tiny
    coded = LmCorrectedVectorForm(64, 8, None, 64)
    assert MemoryTrainer(model, fast()).config.optimizer == "adam"
    assert MemoryTrainer(model, fast(corrections=8), form=coded).config.optimizer == "rprop"
    assert MemoryTrainer(model, fast(), form=coded).config.optimizer == "adam"  # corrections 0, the default
    assert MemoryTrainer(model, fast(optimizer="adam"), form=coded).config.optimizer == "adam"
    assert MemoryTrainer(model, fast(optimizer="rprop")).config.optimizer == "rprop"


def test_failed_verification_gets_bounded_extra_steps(tiny, passages):
    """An unreachable decode margin makes verification fail: the chunk trains on with a
    doubled margin for at most extra_steps, then is reported as not accepted."""
    model, _ = tiny
    ids = passages[0]
    (plain,) = MemoryTrainer(model, fast()).train([ids])
    (result,) = MemoryTrainer(model, fast(verify_margin=1e6, extra_steps=7)).train([ids])
    assert result.exact and not result.accepted
    assert plain.steps < result.steps <= plain.steps + 7


def test_callers_model_is_left_alone(tiny, passages):
    model, _ = tiny
    before = {name: p.clone() for name, p in model.state_dict().items()}
    trainer = MemoryTrainer(model, fast(train_dtype="bfloat16", max_steps=5))
    trainer.train(passages[:2])
    assert trainer.train_model is not model
    assert all(p.dtype == torch.float32 and not p.requires_grad and p.grad is None for p in model.parameters())
    for name, p in model.state_dict().items():
        assert torch.equal(p, before[name]), name


def test_config_is_checked():
    with pytest.raises(ValueError):
        TrainConfig(train_dtype="float16")
    with pytest.raises(ValueError):
        TrainConfig(margin=0)
    with pytest.raises(ValueError):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError):
        TrainConfig(min_step_size=0.5, step_size=0.3)
    with pytest.raises(ValueError):
        TrainConfig(correction_weight=1.5)


def test_each_chunk_trains_within_its_own_budget(tiny):
    """Per-chunk budgets (what the codec gives chunks it could still cut) replace max_steps
    chunk by chunk; batch-mates keep theirs."""
    model, tokenizer = tiny
    ids = ids_of(tokenizer, UNSEEN)
    short, full = MemoryTrainer(model, fast(max_steps=40)).train([ids, ids], budgets=[7, 40])
    assert (short.steps, full.steps) == (7, 40)
    assert not short.converged and not short.accepted


def test_empty_chunk_and_bad_budgets_are_rejected(tiny):
    model, _ = tiny
    with pytest.raises(ValueError):
        MemoryTrainer(model, fast()).train([[]])
    for budgets in ([5], [5, 0]):
        with pytest.raises(ValueError, match="step budget"):
            MemoryTrainer(model, fast()).train([[1, 2], [3, 4]], budgets=budgets)


@pytest.mark.slow
def test_default_model_trains_a_short_chunk():
    from llmzip.model import load_model

    loaded = load_model("default")
    ids = ids_of(loaded.tokenizer, "Memory tokens compress text.")
    (result,) = MemoryTrainer(loaded.model, TrainConfig(max_steps=400)).train([ids])
    assert result.accepted
    assert decode(loaded.model, result.vector, len(ids)).token_ids == ids


def test_fitted_start_is_shipped_for_the_default_model_only():
    """llmzip/starts/ holds the default model's fitted start (bench/fit_start_vector.py);
    other models start from seeded random vectors."""
    from llmzip.train import fitted_start

    start = fitted_start("89a806cfdf3c7ec5")  # Gemma 3 270M's weights fingerprint (algorithm 2)
    assert start.shape == (640,) and start.dtype == torch.float32 and torch.isfinite(start).all()
    assert fitted_start("0000000000000000") is None


def test_a_start_vector_moves_every_chunk_start_by_the_same_amount(tiny_model):
    from llmzip.train import MemoryTrainer, TrainConfig

    config = TrainConfig(start_noise=0.25)
    plain = MemoryTrainer(tiny_model.model, config)
    offset = torch.full((tiny_model.identity.hidden_size,), 0.5)  # (d,)
    started = MemoryTrainer(tiny_model.model, config, start=offset)
    for ids in ([5, 6, 7], [8, 9]):
        random_vector = plain._start(0, ids, config.margin).params
        assert torch.allclose(started._start(0, ids, config.margin).params, offset + 0.25 * random_vector)


def test_the_seed_varies_every_start_and_seed_0_keeps_the_old_starts(tiny_model):
    """CPU generators keep 32 bits of a seed: the seed once sat above them and changed nothing."""
    import zlib

    from llmzip.train import MemoryTrainer, TrainConfig

    ids = [5, 6, 7]
    starts = {seed: MemoryTrainer(tiny_model.model, TrainConfig(seed=seed))._start(0, ids, 0.5).params for seed in (0, 1, 2)}
    assert not torch.equal(starts[0], starts[1]) and not torch.equal(starts[1], starts[2])
    generator = torch.Generator().manual_seed(zlib.crc32(torch.tensor(ids).numpy().tobytes()))  # before the fix, seed 0
    d = tiny_model.identity.hidden_size
    trainer = MemoryTrainer(tiny_model.model, TrainConfig())
    assert torch.equal(starts[0], (torch.randn(d, generator=generator) * trainer.embed_rms))
    with pytest.raises(ValueError):
        TrainConfig(seed=2**32)
