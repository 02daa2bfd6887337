"""Memory tokens that are memory tokens (docs/DESIGN.md, invariant 9): at the defaults every
vector an archive stores regenerates its chunk *alone*. Checked the way a user would: export
the vectors, then decode each with plain transformers (BOS embedding + vector, greedy), with
no llmzip code in the loop."""

import json

import pytest
import torch
from safetensors import safe_open

from llmzip import chunking, codec
from llmzip.errors import InputError
from llmzip.train import TrainConfig

# Passages the fixture model holds in one vector (tests/test_train.py); with chunk_tokens=8
# the longer ones split into several chunks, some of which it holds. Longer than the
# fixture's smallest vector record (140 B), so compress trains vectors for it.
TEXT = ("The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
        "How vexingly quick daft zebras jump! El veloz murciélago hindú comía feliz cardillo y kiwi.").encode()
FAST = dict(lr=1.0, train_dtype="float32", max_steps=200, batch_size=8)


def regenerate_alone(model_dir, vectors, rows) -> list[bytes]:
    """Each row's chunk as plain transformers decodes it from the row's vector alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    embed = model.get_input_embeddings()
    texts = []
    with torch.no_grad():
        bos = embed(torch.tensor([[model.config.bos_token_id]]))  # (1, 1, d)
        for vector, row in zip(vectors, rows):
            prompt = torch.cat([bos, vector.float()[None, None]], dim=1)  # (1, 2, d)
            out = model(inputs_embeds=prompt, use_cache=True)
            ids = []
            for _ in range(row["n_tokens"]):
                ids.append(int(out.logits[0, -1].argmax()))
                out = model(input_ids=torch.tensor([[ids[-1]]]), cache=out.cache, use_cache=True)
            texts.append(tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False).encode())
    return texts


def exported(archive: bytes, tmp_path):
    """(vectors (N, d), their rows) of ``llmzip export``'s safetensors, read as a user would."""
    path = tmp_path / "vectors.safetensors"
    path.write_bytes(codec.export(archive))
    with safe_open(str(path), framework="pt") as opened:
        return opened.get_tensor("vectors"), json.loads(opened.metadata()["llmzip.chunks"])


@pytest.mark.parametrize("form", [{}, {"rank": 64, "bits": 8}], ids=["model default (fp16)", "coded 8-bit"])
def test_every_exported_vector_regenerates_its_chunk_alone(tiny_model, tiny_model_dir, tmp_path, form):
    compressor = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, train=TrainConfig(**FAST, **form))
    archive, report = compressor.compress_with_report(TEXT)
    assert report.memory_chunks >= 1, "the fixture model holds some of these chunks"
    assert report.standalone_chunks == report.memory_chunks
    assert codec.LmzDecompressor(loaded=tiny_model).decompress(archive) == TEXT

    vectors, rows = exported(archive, tmp_path)
    assert len(rows) == report.memory_chunks == vectors.shape[0]
    assert all(row["standalone"] for row in rows)
    for row, text in zip(rows, regenerate_alone(tiny_model_dir, vectors, rows)):
        assert text == TEXT[row["offset"] : row["offset"] + row["length"]]


def test_corrections_make_hybrids_that_say_so(tiny_model, tmp_path):
    """With corrections a vector may lean on corrected tokens: it is counted as a vector,
    and as standalone only where it has none."""
    train = TrainConfig(**{**FAST, "max_steps": 30}, rank=64, bits=4, corrections=8, correction_steps=1)
    compressor = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, train=train)
    archive, report = compressor.compress_with_report(TEXT)
    _, rows = exported(archive, tmp_path)
    hybrids = [row for row in rows if row["corrected_positions"]]
    assert hybrids, "30 steps leave some chunk short of the margin at a few positions"
    assert [row["standalone"] for row in rows] == [not row["corrected_positions"] for row in rows]
    assert report.standalone_chunks == report.memory_chunks - len(hybrids)


def test_chunks_no_vector_holds_are_cut_in_half_and_trained_again(tiny_model, tiny_model_dir, tmp_path):
    """A chunk no vector holds alone is cut into pieces of half its budget, each trained
    for a vector of its own: more of the input is held by vectors, every one of them alone,
    and the rounds are journaled, so a resumed run trains nothing and writes the same archive."""
    train = TrainConfig(**FAST)
    whole = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=16, min_chunk_tokens=16, train=train)
    _, uncut = whole.compress_with_report(TEXT)
    assert 0 < uncut.standalone_bytes < len(TEXT), "the fixture model holds some 16-token chunks, not all"

    halving = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=16, train=train)  # default: one round, 8 tokens
    journal = tmp_path / "out.lmz.journal"
    archive, report = halving.compress_with_report(TEXT, journal_path=journal)
    assert report.standalone_bytes > uncut.standalone_bytes
    assert report.memory_chunks > uncut.memory_chunks
    assert codec.LmzDecompressor(loaded=tiny_model).decompress(archive) == TEXT
    vectors, rows = exported(archive, tmp_path)
    assert max(row["n_tokens"] for row in rows) <= 16 and min(row["n_tokens"] for row in rows) <= 8
    for row, text in zip(rows, regenerate_alone(tiny_model_dir, vectors, rows)):
        assert text == TEXT[row["offset"] : row["offset"] + row["length"]]

    resumed, again = halving.compress_with_report(TEXT, journal_path=journal)
    assert resumed == archive
    first_round = sum(chunk.eligible for chunk in chunking.split(TEXT, tiny_model.tokenizer, max_tokens=16))
    assert again.resumed_chunks > first_round, "the pieces' groups were journaled and resumed too"


def test_a_chunk_that_would_be_cut_trains_for_cut_steps_only(tiny_model):
    """cut_steps is the budget of chunks a later round would cut (longer than the last
    round's pieces, codec memory only); the others keep max_steps."""
    chunks = chunking.split(TEXT, tiny_model.tokenizer, max_tokens=16)
    group = [index for index, chunk in enumerate(chunks) if chunk.eligible]
    lengths = [len(chunks[index].token_ids) for index in group]
    assert max(lengths) > 8 >= min(lengths), "the text has chunks longer and shorter than the 8-token pieces"
    train = TrainConfig(**FAST)  # max_steps 200

    def budgets(**options):
        compressor = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=16, train=train, **options)
        return compressor.step_budgets(chunks, group)

    assert budgets(cut_steps=7) == [7 if n > 8 else 200 for n in lengths]
    assert budgets(cut_steps=7, min_chunk_tokens=4) == [7 if n > 4 else 200 for n in lengths]  # two rounds
    assert budgets(cut_steps=7, min_chunk_tokens=16) == [200] * len(group)  # no cutting
    assert budgets(cut_steps=7, codec="auto") == [200] * len(group)
    assert budgets(cut_steps=500) == [200] * len(group)  # never above max_steps


def test_cut_steps_reach_the_trainer_and_the_journal(tiny_model, tmp_path):
    """One step holds no 16-token chunk, so with cut_steps=1 every chunk longer than 8
    tokens is cut; a journal of another cut_steps is not resumed."""
    train = TrainConfig(**FAST)
    journal = tmp_path / "out.lmz.journal"
    cut_early = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=16, cut_steps=1, train=train)
    archive, report = cut_early.compress_with_report(TEXT, journal_path=journal)
    assert codec.LmzDecompressor(loaded=tiny_model).decompress(archive) == TEXT
    _, rows = exported(archive, tmp_path)
    assert rows and max(row["n_tokens"] for row in rows) <= 8
    default = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=16, train=train)
    _, again = default.compress_with_report(TEXT, journal_path=journal)
    assert again.resumed_chunks == 0


def test_min_chunk_tokens_and_cut_steps_outside_their_range_are_refused(tiny_model):
    with pytest.raises(InputError, match="min_chunk_tokens must be in 1..16"):
        codec.LmzCompressor(loaded=tiny_model, chunk_tokens=16, min_chunk_tokens=17)
    with pytest.raises(InputError, match="cut_steps must be at least 1"):
        codec.LmzCompressor(loaded=tiny_model, cut_steps=0)
