"""What the range-coded kinds (``lm``, ``memory-int-coded``, ``memory-int-lm``) share: ``constriction``'s
coder, models built from integer counts, and the coded words' byte layout; and what both
schemes of a token coded under the model's logits share (kind ``lm``'s schemes 1 and 2;
``memory-int-lm`` codes its corrected tokens with scheme 2): the grid step and tolerance,
the settings that record them, and each position's mode symbol (a grid, or the raw id).

Both sides of a code build a model from the same integers with the same IEEE float64
divisions, and ``constriction`` quantises a float model the same way on every machine,
so an encoder and a decoder on different machines agree bit for bit (format/CODEC.md).
"""

from __future__ import annotations

from llmzip.wire import SETTINGS_KEYS

# Quantisation of the logits (CODEC.md, "Kind lm"). DELTA is a power of two, so logit / DELTA
# and the half-step shift are exact in float64 and the levels are the same on every machine.
DELTA = 0.5
TOLERANCE = 1e-4  # distance every relevant logit keeps from a grid line (4x the measured batch-shape drift)
# The mode of each position: a grid (mode m: the scheme's shift m), or the token id coded
# uniformly (the last mode). Adaptive counts, start MODE_START, +MODE_STEP per use.
MODE_START = (64, 1, 1)
MODE_STEP = 64


def lm_settings(delta, levels, band_levels, tolerance) -> dict:
    """The header settings that record a token code's parameters (and so select its scheme)."""
    return {SETTINGS_KEYS[name]: value
            for name, value in (("lm_delta", delta), ("lm_levels", levels), ("lm_band_levels", band_levels),
                                ("lm_tolerance", tolerance))}


def categorical(probs):
    """A ``constriction`` categorical model of float64 probabilities (summing to 1)."""
    import constriction

    return constriction.stream.model.Categorical(probs, perfect=False)


def counts_model(counts):
    """The categorical model of integer ``counts`` (each > 0): count / total in float64."""
    import numpy

    counts = numpy.asarray(counts, dtype=numpy.float64)
    return categorical(counts / counts.sum())


def pack_words(words) -> bytes:
    """The coder's 32-bit words as little-endian bytes, up to 3 trailing zero bytes of
    the last word dropped."""
    raw = words.astype("<u4").tobytes()
    keep = len(raw)
    while keep > len(raw) - 3 and keep > 1 and raw[keep - 1] == 0:
        keep -= 1
    return raw[:keep]


def unpack_words(coded: bytes):
    """The (n,) uint32 words of :func:`pack_words`' bytes (dropped zero bytes restored)."""
    import numpy

    padded = coded + b"\0" * (-len(coded) % 4)
    return numpy.frombuffer(padded, dtype="<u4").astype(numpy.uint32)


class RowDecoder:
    """Decodes one chunk's tokens; a corrupt code marks it failed (its checksum then refuses
    it). The mode and the raw id are common to both schemes; a scheme's subclass sets its
    grid ``shifts`` and decodes a grid position in ``_grid(row, mode)`` (None: the raw id)."""

    shifts: tuple

    def __init__(self, coded: bytes, coder=None):
        """Over ``coded``, or, given ``coder``, over what is left of that range decoder (a
        code shared with other symbols: kind memory-int-lm)."""
        import constriction

        self.coder = coder if coder is not None else constriction.stream.queue.RangeDecoder(unpack_words(coded))
        self.counts = [MODE_START[0]] + [MODE_START[1]] * len(self.shifts)  # the grids, then the raw id
        self.failed = False

    def guard(self, step, *args):
        """``step(*args)``, or None once the code has failed: constriction raises on a
        corrupt or exhausted code, which marks the row failed for good."""
        if self.failed:
            return None
        try:
            return step(*args)
        except Exception:  # noqa: BLE001 - constriction raises on a corrupt or exhausted code
            self.failed = True
            return None

    def mode(self) -> int:
        """Decode a position's mode: a grid (0 .. len(shifts) - 1), or the raw id."""
        mode = int(self.coder.decode(counts_model(self.counts)))
        self.counts[mode] += MODE_STEP
        return mode

    def raw(self, vocab: int) -> int:
        """Decode a token coded as its raw id, uniformly over ``vocab`` ids."""
        import constriction

        token = int(self.coder.decode(constriction.stream.model.Uniform(vocab)))
        if not 0 <= token < vocab:
            raise ValueError(token)
        return token

    def __call__(self, position: int, row) -> int:
        """The token at ``position`` from its (V,) float32 logits (numpy); 0 once failed."""

        def step() -> int:
            mode = self.mode()
            token = None if mode == len(self.shifts) else self._grid(row, mode)
            return self.raw(row.shape[-1]) if token is None else token

        token = self.guard(step)
        return 0 if token is None else token

    def _grid(self, row, mode: int) -> int | None:
        raise NotImplementedError
