"""Chunking: exact bytes, token budgets, round trips, natural boundaries, invalid UTF-8.

Every test runs its chunks through ``check``, which asserts the whole contract of
``split``; the individual tests then pin down where cuts go and why.
"""

import random
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from llmzip import chunking
from llmzip.chunking import Chunk, Ineligible, ineligible_bytes, split
from llmzip.errors import ModelError

PROSE = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
    "How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow.\n\n"
    "Machine learning models are trained on data; the weights are then frozen and reused. "
    "A memory token is a single input vector trained so that a frozen language model "
    "writes out one chosen piece of text word for word.\n\n"
)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def decode(tokenizer, ids) -> str:
    return tokenizer.decode(
        list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
    )


def char_starts(data: bytes) -> set[int]:
    """Byte offsets where a character (or an invalid byte) starts, plus the end."""
    offsets, pos = {len(data)}, 0
    for char in data.decode("utf-8", "surrogateescape"):
        offsets.add(pos)
        pos += len(char.encode("utf-8", "surrogateescape"))
    return offsets


def check(data: bytes, tokenizer, max_tokens: int) -> list[Chunk]:
    """Split and assert every promise of ``split``; return the chunks."""
    chunks = split(data, tokenizer, max_tokens=max_tokens)
    assert b"".join(c.data for c in chunks) == data
    boundaries = char_starts(data)
    pos = 0
    for chunk in chunks:
        assert chunk.data and chunk.start == pos and chunk.start in boundaries
        pos += len(chunk.data)
        assert chunk.eligible == (chunk.token_ids is not None) == (chunk.ineligible is None)
        if chunk.ineligible is Ineligible.NOT_UTF8:
            assert len(chunk.data) <= chunking.MAX_INELIGIBLE_BYTES
            continue
        text = chunk.data.decode("utf-8")  # everything else is valid UTF-8
        ids = encode(tokenizer, text)
        round_trips = bool(ids) and decode(tokenizer, ids) == text
        assert chunk.eligible == (round_trips and len(ids) <= max_tokens)
        if chunk.eligible:
            assert chunk.token_ids == tuple(ids)
        elif chunk.ineligible is Ineligible.OVER_BUDGET:
            assert round_trips and len(ids) > max_tokens
        else:
            assert chunk.ineligible is Ineligible.ROUND_TRIP and not round_trips
    return chunks


def texts(chunks: list[Chunk]) -> list[str]:
    return [c.data.decode("utf-8") for c in chunks]


INPUTS = {
    "empty": b"",
    "one byte": b"a",
    "ascii": PROSE.encode(),
    # CJK, emoji with a skin tone, a ZWJ family, precomposed and combining accents
    "multi-byte": (
        "日本語です。中文。😀👍🏽 \U0001f468\u200d\U0001f469\u200d\U0001f467 "
        "café naïve cafe\u0301 Ñandú"
    ).encode(),
    "crlf and mixed endings": b"one line.\r\ntwo line.\r\n\r\nthree.\nfour.\rfive.\n\r\nsix",
    "bom": "\ufeffHello, world. A second sentence.".encode(),
    "trailing whitespace": b"Some text.  \t \n\n   \n  ",
    "nul bytes": b"a\x00b\x00\x00 c. \x00\x00\x00\x00",
    "random binary": random.Random(0).randbytes(200_000),
    "latin-1": "Le cœur a ses raisons que la raison ne connaît point. Ça va, garçon?"
    .replace("œ", "oe")
    .encode("latin-1"),
}


@pytest.mark.parametrize("max_tokens", [1, 3, 16, 64])
@pytest.mark.parametrize("name", INPUTS)
def test_contract_on_awkward_inputs(name, max_tokens, tok):
    check(INPUTS[name], tok, max_tokens)


def test_empty_input_has_no_chunks(tok):
    assert split(b"", tok, max_tokens=16) == []


VALID_UTF8 = [name for name in INPUTS if name not in ("empty", "random binary", "latin-1")]


@pytest.mark.parametrize("name", VALID_UTF8)
def test_valid_utf8_the_fixture_tokenizer_reproduces_is_all_eligible(name, tok):
    """Measured: the byte-level BPE round-trips all of these, NUL, BOM and CR included."""
    assert all(c.eligible for c in check(INPUTS[name], tok, 64))


def test_budget_must_be_positive(tok):
    with pytest.raises(ValueError):
        split(b"abc", tok, max_tokens=0)


def test_chunks_fill_the_budget_across_paragraphs(tok):
    """Small paragraphs share a chunk: fewer vectors, smaller archive."""
    chunks = check((PROSE * 20).encode(), tok, 128)
    sizes = [len(c.token_ids) for c in chunks[:-1]]
    assert min(sizes) >= chunking.PREFERRED_FILL * 128
    assert len(chunks) <= len(encode(tok, PROSE * 20)) / (chunking.PREFERRED_FILL * 128) + 1


def test_a_paragraph_end_late_in_the_budget_beats_a_later_sentence_end(tok):
    first = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen jugs.\n\n"
    second = "How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow."
    budget = int(len(encode(tok, first)) / 0.8)  # the paragraph end sits at ~80% of it
    chunks = check((first + second).encode(), tok, budget)
    assert texts(chunks)[0] == first


def test_sentences_before_words(tok):
    text = "Sphinx of black quartz, judge my vow. " * 10
    for chunk in texts(check(text.encode(), tok, 40))[:-1]:
        assert chunk.endswith("vow."), chunk


def test_line_breaks_end_a_chunk_and_spaces_start_the_next(tok):
    """Both tokenizers fold a leading space into the next word's token, so spaces lead;
    line breaks are tokens of their own and stay with the line they end."""
    text = "First sentence here.   Second sentence here.\n\n  Indented third sentence.\r\nFourth."
    pieces = texts(check(text.encode(), tok, 8))
    assert len(pieces) > 2
    for before, after in zip(pieces, pieces[1:]):
        assert not before.endswith((" ", "\t"))
        assert not after.startswith(("\n", "\r"))
    assert any(p.endswith("here.\n\n") for p in pieces)
    assert any(p.startswith("  Indented") for p in pieces)


def test_cjk_full_stops_are_sentence_ends(tok):
    text = "日本語のテキストです。中文。これは長い文です。" * 3
    pieces = texts(check(text.encode(), tok, 60))
    assert all(p.endswith("。") for p in pieces)


def test_a_long_word_is_cut_between_tokens(tok):
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEF0123456789+/"
    blob = "".join(random.Random(1).choices(alphabet, k=3000))
    chunks = check(blob.encode(), tok, 50)
    assert len(chunks) > 1 and all(c.eligible for c in chunks)
    assert sum(len(c.token_ids) for c in chunks) >= 0.9 * 50 * (len(chunks) - 1)


def test_a_character_bigger_than_the_budget_is_alone_and_over_budget(tok):
    """The fixture spells an emoji with four byte tokens; a budget of 2 cannot hold one."""
    chunks = check("ab 😀 cd".encode(), tok, 2)
    over = [c for c in chunks if c.ineligible is Ineligible.OVER_BUDGET]
    assert [c.data for c in over] == ["😀".encode()]


class Undercounting:
    """The fixture tokenizer, except that its offsets hide every other token, so the
    packing estimate is half the truth."""

    is_fast = True

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, texts, **kwargs):
        out = self.inner(texts, **kwargs)
        if kwargs.get("return_offsets_mapping"):
            out["offset_mapping"] = [spans[::2] for spans in out["offset_mapping"]]
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_chunks_the_estimate_got_wrong_are_packed_again(tok):
    chunks = check((PROSE * 3).encode(), Undercounting(tok), 30)
    assert all(c.eligible for c in chunks)


def test_random_binary_becomes_bounded_not_utf8_chunks(tok):
    data = random.Random(2).randbytes(300_000)
    chunks = check(data, tok, 64)
    assert all(c.ineligible is Ineligible.NOT_UTF8 for c in chunks)
    assert len(chunks) == -(-len(data) // chunking.MAX_INELIGIBLE_BYTES)
    assert ineligible_bytes(chunks) == {Ineligible.NOT_UTF8: len(data)}


def test_one_bad_byte_in_text_costs_only_its_neighbourhood(tok):
    data = (PROSE * 5).encode() + b"\xff" + (PROSE * 5).encode()
    chunks = check(data, tok, 64)
    assert 1 <= ineligible_bytes(chunks)[Ineligible.NOT_UTF8] <= chunking.MIN_TEXT_RUN
    assert sum(c.eligible for c in chunks) >= len(chunks) - 1


def test_latin1_text_is_reported_as_not_utf8(tok):
    chunks = check(INPUTS["latin-1"], tok, 64)
    assert ineligible_bytes(chunks)[Ineligible.NOT_UTF8] > 0


@pytest.fixture(scope="module")
def lowercasing_tok():
    """A tokenizer that normalises case, so text with capitals cannot round-trip."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator([PROSE.lower()], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>")


def test_text_the_tokenizer_does_not_reproduce_is_ineligible(lowercasing_tok):
    data = b"all lower case here.\n\nBut This Has Capitals.\n\nand lower again."
    chunks = check(data, lowercasing_tok, 8)
    reasons = {c.data.decode(): c.ineligible for c in chunks}
    assert Ineligible.ROUND_TRIP in reasons.values()
    assert all(reason is None for text, reason in reasons.items() if text.islower())


def test_slow_tokenizers_are_refused():
    class Slow:
        is_fast = False

    with pytest.raises(ModelError):
        split(b"text", Slow(), max_tokens=8)


def test_one_megabyte(tok):
    data = (PROSE * (1_000_000 // len(PROSE) + 1)).encode()[:1_000_000]
    chunks = split(data, tok, max_tokens=128)
    assert b"".join(c.data for c in chunks) == data
    assert all(c.eligible and len(c.token_ids) <= 128 for c in chunks)


# Text with many kinds of boundary and awkward characters, and bytes that are not UTF-8.
fragments = st.sampled_from(
    ["word", "Word", " ", "  ", "\t", ".", "!", "?", "\n", "\r\n", "\r", "\n\n", "。", "日本",
     "😀", "é", "e\u0301", "\ufeff", "\x00", "»", "\"", "lazy dog", "3.14"]
)
texts_strategy = st.one_of(st.text(max_size=300), st.lists(fragments, max_size=120).map("".join))
inputs = st.one_of(
    texts_strategy.map(str.encode),
    st.binary(max_size=300),
    st.lists(st.one_of(texts_strategy.map(str.encode), st.binary(max_size=20)), max_size=8).map(
        b"".join
    ),
)


@settings(max_examples=300, deadline=None)
@given(data=inputs, max_tokens=st.integers(1, 40))
def test_property_contract(data, max_tokens, tok):
    check(data, tok, max_tokens)


@settings(max_examples=100, deadline=None)
@given(data=inputs, max_tokens=st.integers(1, 40), block=st.integers(1, 50))
def test_property_contract_with_tiny_blocks(data, max_tokens, block, tok):
    """Blocks and invalid runs are normally large; shrink them to exercise their edges."""
    with (
        mock.patch.object(chunking, "BLOCK_CHARS", block),
        mock.patch.object(chunking, "MAX_INELIGIBLE_BYTES", block + 3),
    ):
        check(data, tok, max_tokens)


@pytest.mark.slow
def test_gemma_tokenizer(default_model):
    """Measured on Gemma 3's tokenizer: everything round-trips except a literal U+2581
    (its decoder turns the SentencePiece space marker back into a space)."""
    gemma = default_model.tokenizer
    for data in INPUTS.values():
        check(data, gemma, 64)
    chunks = check("a\u2581b. Fine text.".encode(), gemma, 3)
    assert [c.ineligible for c in chunks] == [Ineligible.ROUND_TRIP, None]
