"""Split input bytes into chunks, each small enough for one memory vector.

A chunk is *eligible* for a memory vector when its bytes are valid UTF-8, the tokenizer
turns its text into 1..``max_tokens`` tokens, and those tokens decode back to exactly the
same text. Everything else (binary, other encodings, text the tokenizer cannot reproduce)
still becomes chunks, which the codec stores with zstd, so that
``b"".join(c.data for c in split(data, ...)) == data`` for every input.

How text is cut, and why:

* Boundaries, strongest first: paragraph (a blank line), sentence (``.!?…`` and the CJK
  full stops, then whitespace), line, word (whitespace). A stretch with no boundary that is
  still over budget (a long URL, base64, CJK without punctuation) is cut between tokens:
  at the character where a token of the text's own tokenisation starts. A character that
  alone needs more tokens than the budget (an emoji spelled in byte tokens, tiny budgets)
  becomes a chunk of its own, ineligible.
* Each chunk is packed as full as the budget allows (fewer vectors, smaller archive), but
  ends at the strongest boundary found in the last quarter of the budget: a paragraph end
  at 80% beats a sentence end at 99%, a sentence end beats a word end.
* Separating whitespace: line breaks end the previous chunk, spaces and tabs start the
  next one. Both tokenizers we measured (Gemma 3's SentencePiece-style BPE and the test
  fixture's byte-level BPE) fold a leading space into the next word's token (``▁world``,
  ``Ġworld``), so a space that led the next chunk is free while a space that trailed the
  previous chunk costs one lone-space token per chunk. Line breaks are tokens of their own
  in both, so they cost the same on either side; they go with the line they end, the way
  ``str.splitlines(keepends=True)`` keeps them, and chunks then start with content.
* Cuts fall between code points (Python ``str`` slicing), so no UTF-8 character is split;
  grapheme clusters (``e`` + combining accent, emoji ZWJ sequences) may be, at token cuts.
* Text that spells a special token (``<eos>``, ``<bos>``) encodes to that token and decodes
  back, so it is eligible and its ``token_ids`` hold the special id: decoding must run for
  the stored token count, not stop at EOS.

Invalid UTF-8 (read with ``surrogateescape``, each bad byte one lone surrogate) becomes
ineligible chunks of at most ``MAX_INELIGIBLE_BYTES``. Valid stretches shorter than
``MIN_TEXT_RUN`` characters between bad bytes (or a bad byte and either end of the input)
are swallowed into the ineligible chunks: random binary is full of short valid runs, and a
memory vector for each would cost far more than zstd does.

Cost: the text is tokenised once, with offsets, and a chunk's size is estimated as the
number of tokens that start inside it (BPE may tokenise a chunk on its own a little
differently); every packed chunk is then encoded once to check its budget and round trip,
and only a chunk the estimate got wrong is packed again with a smaller budget. Offsets need
a fast (Rust-backed) tokenizer.
"""

from __future__ import annotations

import enum
import math
import re
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from llmzip.errors import ModelError

MAX_INELIGIBLE_BYTES = 64 * 1024
"""Largest ineligible chunk; bounds the memory and the damage of one corrupt zstd frame."""

MIN_TEXT_RUN = 64
"""Valid UTF-8 runs shorter than this (characters) between invalid bytes are not text."""

PREFERRED_FILL = 0.75
"""A boundary at or beyond this fraction of the budget may be chosen over a later, weaker one."""

BLOCK_CHARS = 1 << 16
"""Text is packed in blocks of at most this many characters (see ``_blocks``)."""

BATCH_BLOCKS = 16
"""Blocks tokenised in one batched call."""

_BOUNDARY = re.compile(
    # a whitespace run, optionally after sentence-final punctuation and closing quotes
    r"(?P<stop>[.!?…。！？]+[\"'”’»)\]」』）]*)?(?P<ws>[ \t\n\r\f\v]+)"
    # or a CJK full stop, which needs no space after it
    r"|(?P<cjk>[。！？]+[」』）]*)"
)
_BAD = r"[\udc80-\udcff]"  # an invalid byte, as surrogateescape decodes it
_SHORT_TEXT = rf"[^\udc80-\udcff]{{0,{MIN_TEXT_RUN - 1}}}"
# invalid bytes and the short valid runs between them, or between them and either end
_INVALID_RUN = re.compile(
    rf"(?:\A{_SHORT_TEXT})?{_BAD}(?:{_SHORT_TEXT}{_BAD})*(?:{_SHORT_TEXT}\Z)?"
)


class Ineligible(enum.Enum):
    """Why a chunk gets no memory vector (the codec stores it with zstd)."""

    NOT_UTF8 = "not valid UTF-8"
    ROUND_TRIP = "the tokenizer does not reproduce the text"
    OVER_BUDGET = "more tokens than the budget, and too short to cut (one character)"


@dataclass(frozen=True)
class Chunk:
    """One piece of the input. ``token_ids`` is None exactly when ``ineligible`` is set."""

    start: int
    """Byte offset of ``data`` in the input."""
    data: bytes
    """The chunk's exact bytes."""
    token_ids: tuple[int, ...] | None
    """``tokenizer.encode(text, add_special_tokens=False)``; None when not eligible."""
    ineligible: Ineligible | None = None

    @property
    def eligible(self) -> bool:
        return self.token_ids is not None


class _Piece(NamedTuple):
    """A chunk before it knows its byte offset."""

    text: str  # may hold lone surrogates: invalid bytes read with surrogateescape
    token_ids: tuple[int, ...] | None
    ineligible: Ineligible | None


def split(data: bytes, tokenizer, *, max_tokens: int) -> list[Chunk]:
    """Cut ``data`` into chunks of at most ``max_tokens`` tokens at natural boundaries.

    ``tokenizer`` is a fast Hugging Face tokenizer. The chunks' bytes concatenate to
    ``data``; see the module docstring for where cuts go and what makes a chunk eligible.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    text_splitter = _TextSplitter(tokenizer, max_tokens)
    chunks: list[Chunk] = []
    start = 0
    for region, is_text in _regions(data.decode("utf-8", "surrogateescape")):
        if is_text:
            pieces = text_splitter.split(region)
        else:
            pieces = [_Piece(piece, None, Ineligible.NOT_UTF8) for piece in _bounded(region)]
        for piece in pieces:
            raw = piece.text.encode("utf-8", "surrogateescape")
            chunks.append(Chunk(start, raw, piece.token_ids, piece.ineligible))
            start += len(raw)
    return chunks


def detokenize(tokenizer, token_ids) -> str:
    """The one way llmzip turns token ids back into text: chunking's round-trip check,
    every kind that decodes, and ``llmzip bench`` all call this (format/CODEC.md: no special
    tokens skipped, no clean-up of spaces)."""
    return tokenizer.decode(list(token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def text_bytes(text: str) -> bytes:
    """A chunk's bytes from its text: UTF-8, with any lone surrogates kept as they came."""
    return text.encode("utf-8", "surrogatepass")


def ineligible_bytes(chunks: Iterable[Chunk]) -> Counter[Ineligible]:
    """Bytes per reason that go to zstd, for messages such as "input is not valid UTF-8;
    N bytes stored with zstd" (``ineligible_bytes(chunks)[Ineligible.NOT_UTF8]``)."""
    counts: Counter[Ineligible] = Counter()
    for chunk in chunks:
        if chunk.ineligible is not None:
            counts[chunk.ineligible] += len(chunk.data)
    return counts


def _regions(text: str) -> Iterator[tuple[str, bool]]:
    """Alternate valid-text and invalid-UTF-8 stretches of a ``surrogateescape`` string."""
    pos = 0
    for match in _INVALID_RUN.finditer(text):
        if match.start() > pos:
            yield text[pos : match.start()], True
        yield match.group(), False
        pos = match.end()
    if pos < len(text):
        yield text[pos:], True


def _bounded(region: str) -> Iterator[str]:
    """Slices of ``region`` of at most ``MAX_INELIGIBLE_BYTES`` bytes each, cut between
    characters (a valid character that got swallowed into binary stays whole)."""
    pos = 0
    while pos < len(region):
        end = min(len(region), pos + MAX_INELIGIBLE_BYTES)
        size = len(region[pos:end].encode("utf-8", "surrogateescape"))
        while size > MAX_INELIGIBLE_BYTES:  # multi-byte characters: shrink proportionally
            end = pos + (end - pos) * MAX_INELIGIBLE_BYTES // size
            size = len(region[pos:end].encode("utf-8", "surrogateescape"))
        yield region[pos:end]
        pos = end


class Cut(enum.IntEnum):
    """Strength of a boundary; stronger is a better place to end a chunk."""

    WORD = 1
    LINE = 2
    SENTENCE = 3
    PARAGRAPH = 4


def _boundaries(text: str) -> tuple[list[int], list[Cut]]:
    """Inner cut positions of ``text`` (increasing) and the strength of each.

    A megabyte has ~10^5 whitespace runs, so the loop keeps to a few cheap string calls.
    """
    positions, cuts = [], []
    word, line, sentence, paragraph = Cut.WORD, Cut.LINE, Cut.SENTENCE, Cut.PARAGRAPH
    for match in _BOUNDARY.finditer(text):
        stop, run, _ = match.groups()
        if run is None:  # CJK full stop
            pos, cut = match.end(), sentence
        else:
            # line breaks stay with the text before, spaces and tabs go with the text after
            last_break = max(run.rfind("\n"), run.rfind("\r"))
            pos = match.start("ws") + last_break + 1
            if last_break < 0:
                cut = sentence if stop else word
            else:
                breaks = run.count("\n") + run.count("\r") - run.count("\r\n")
                cut = paragraph if breaks >= 2 else sentence if stop else line
        if 0 < pos < len(text):
            positions.append(pos)
            cuts.append(cut)
    return positions, cuts


def _blocks(text: str) -> Iterator[str]:
    """Slices of at most ``BLOCK_CHARS`` characters, each ending after a line break where
    there is one (else before a space). Blocks bound the memory that token offsets take
    and are tokenised in parallel; each costs at most one underfilled chunk."""
    pos = 0
    while len(text) - pos > BLOCK_CHARS:
        limit = pos + BLOCK_CHARS
        end = text.rfind("\n", pos, limit) + 1 or text.rfind(" ", pos, limit)
        if end <= pos:
            end = limit
        yield text[pos:end]
        pos = end
    yield text[pos:]


class _Block:
    """A block of valid text and what packing needs to know about it, in characters:
    where each token of the block's tokenisation starts, and the natural boundaries."""

    def __init__(self, text: str, token_starts: list[int]):
        self.text = text
        self.starts = sorted(token_starts)  # bisect needs order; a normaliser could break it
        self.positions, self.cuts = _boundaries(text)

    def tokens(self, start: int, stop: int) -> int:
        """Estimated tokens of ``text[start:stop]``: the tokens that start inside it."""
        return bisect_left(self.starts, stop) - bisect_left(self.starts, start)

    def pack(self, start: int, stop: int, budget: int) -> list[tuple[int, int]]:
        """Consecutive spans covering ``[start, stop)``, each within ``budget`` estimated
        tokens (except a single character that alone needs more)."""
        spans = []
        while start < stop:
            end = self._chunk_end(start, stop, budget)
            spans.append((start, end))
            start = end
        return spans

    def _chunk_end(self, start: int, stop: int, budget: int) -> int:
        """Where the chunk from ``start`` ends: ``stop`` if the rest fits, else the strongest
        boundary past ``PREFERRED_FILL`` of the budget, else the last boundary that fits,
        else between tokens."""
        first = bisect_left(self.starts, start)
        if first + budget >= len(self.starts) or self.starts[first + budget] >= stop:
            return stop
        limit = self.starts[first + budget]  # cutting here leaves exactly `budget` tokens
        if limit == start:  # one character spelled by more than `budget` byte tokens
            after = bisect_right(self.starts, start)
            return min(self.starts[after], stop) if after < len(self.starts) else stop
        lo = bisect_right(self.positions, start)
        hi = bisect_right(self.positions, limit)
        full_enough = self.starts[first + math.ceil(PREFERRED_FILL * budget) - 1]
        preferred = range(bisect_right(self.positions, full_enough), hi)
        if preferred:
            return self.positions[max(preferred, key=lambda k: (self.cuts[k], k))]
        return self.positions[hi - 1] if hi > lo else limit


class _TextSplitter:
    """Chunks valid-UTF-8 text against one tokenizer and budget."""

    def __init__(self, tokenizer, max_tokens: int):
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError("chunking needs a fast (Rust-backed) tokenizer for token offsets")
        self.tokenizer = tokenizer
        self.budget = max_tokens

    def split(self, text: str) -> list[_Piece]:
        """The chunks of ``text``, in order."""
        blocks = list(_blocks(text))
        pieces: list[_Piece] = []
        for i in range(0, len(blocks), BATCH_BLOCKS):
            pieces += self._split_blocks(blocks[i : i + BATCH_BLOCKS])
        return pieces

    def _split_blocks(self, texts: list[str]) -> list[_Piece]:
        """Pack each block by estimate, then encode every chunk once to check its budget and
        round trip; a chunk the estimate got wrong is packed again with a smaller budget."""
        offsets = self.tokenizer(
            texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )["offset_mapping"]
        blocks = [_Block(text, [s for s, _ in spans]) for text, spans in zip(texts, offsets)]
        pending = [
            (b, start, stop)
            for b, block in enumerate(blocks)
            for start, stop in block.pack(0, len(block.text), self.budget)
        ]
        done: list[tuple[int, int, _Piece]] = []
        while pending:
            chunks = [blocks[b].text[start:stop] for b, start, stop in pending]
            encoded = self.tokenizer(chunks, add_special_tokens=False, verbose=False)["input_ids"]
            decoded = [detokenize(self.tokenizer, ids) for ids in encoded]
            retry = []
            for (b, start, stop), chunk, ids, back in zip(pending, chunks, encoded, decoded):
                if len(ids) > self.budget:
                    estimate = blocks[b].tokens(start, stop)
                    tighter = max(1, min(2 * self.budget - len(ids), estimate - 1))
                    spans = blocks[b].pack(start, stop, tighter)
                    if spans != [(start, stop)]:
                        retry += [(b, *span) for span in spans]
                        continue
                if not ids or back != chunk:
                    piece = _Piece(chunk, None, Ineligible.ROUND_TRIP)
                elif len(ids) > self.budget:
                    piece = _Piece(chunk, None, Ineligible.OVER_BUDGET)
                else:
                    piece = _Piece(chunk, tuple(ids), None)
                done.append((b, start, piece))
            pending = retry
        return [piece for _, _, piece in sorted(done, key=lambda entry: entry[:2])]
