"""The tokens a decode takes instead of its greedy choices (a leaf module, torch-free).

:func:`llmzip.decode.decode_batch` takes one :class:`Corrections` per row; the kinds whose
records store corrected positions (memory-int-coded, memory-int-lm) make them, and so does
the trainer when it verifies a stored form. It lives apart from both so that neither
imports the other for it.
"""

from __future__ import annotations

from collections.abc import Sequence


class Corrections:
    """The positions of one row where :func:`~llmzip.decode.decode_batch` takes a token
    other than its greedy choice, and the token it takes there. This class holds the tokens
    themselves (kind ``memory-int-coded`` stores them); a subclass may instead work each
    one out from the position's logits (kind ``memory-int-lm`` decodes them from a range
    code under the model). ``failed`` marks a row whose corrections turned out invalid:
    its decode then does not count."""

    failed = False

    def __init__(self, pairs: Sequence[tuple[int, int]] = ()):
        self.tokens = dict(pairs)  # position -> token
        self.positions = frozenset(self.tokens)

    def take(self, position: int, logits) -> int:
        """The token at ``position``; ``logits`` (V,) float32 numpy is the decode's row there,
        valid during the call only."""
        return self.tokens[position]

    def finish(self, payload: bytes) -> bytes:
        """The payload to store once the decode has run, from the one the form stored
        before it: here ``payload`` itself; kind memory-int-lm's writer returns the record
        with the code of what it took."""
        return payload
