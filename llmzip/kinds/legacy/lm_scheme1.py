"""Scheme 1 of kind ``lm`` (format 2.1 as first written; read only): each position's token
coded under a grid distribution of the quantised logits (format/CODEC.md, "Kind lm").

The coding distribution at a position is built from the float32 logits quantised to a grid
of step ``DELTA``: the tokens in the top ``R_LEVELS + 1`` levels, weighted from a fixed
integer table by their level below the top. The encoder codes a position with that
distribution only where every logit that could change it lies at least ``TOLERANCE`` from
a grid line, so a decoder whose logits drift by less than ``TOLERANCE`` builds the same
distribution bit for bit; elsewhere it switches to a second grid shifted by half a step,
or codes the token id uniformly. A token outside the candidates is an ESCAPE symbol, then
its index in the band of the next ``BAND_LEVELS`` levels (coded uniformly, so only the
band's lower edge must be safe), or its id.

The header settings ``SETTINGS`` select this scheme (:func:`llmzip.kinds.lm.scheme_of`);
llmzip writes scheme 2 (:mod:`llmzip.kinds.lm`). The encoder lives in the fixture tooling
(``fixtures/legacy_writers.py``); this module is what reading needs, and the distribution
both sides build.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmzip.kinds.rangecode import DELTA, TOLERANCE, RowDecoder, categorical, counts_model, lm_settings

R_LEVELS = 8  # levels below the top that are candidates: 4 logits
# WEIGHTS[j] = round(2**24 * exp(-DELTA * j)): the weight of a candidate j levels below the
# top. Written out so that no libm is involved (tests check it against the formula).
WEIGHTS = (16777216, 10175896, 6171993, 3743503, 2270549, 1377158, 835288, 506628, 307285)
SHIFTS = (0.0, 0.5)  # grid shift of modes 0 and 1, in steps
# After ESCAPE in a grid: the band of the next BAND_LEVELS levels below the candidates, its
# tokens coded uniformly (only the band's lower edge must be safe), or else the raw id.
BAND_LEVELS = 8
BAND_START = (4, 1)  # adaptive counts of (band, raw id), +1 per use
SETTINGS = lm_settings(DELTA, R_LEVELS, BAND_LEVELS, TOLERANCE)  # what selects this scheme


@dataclass(frozen=True)
class Params:
    """The quantisation (CODEC.md); other values only for measurements."""

    delta: float = DELTA
    r_levels: int = R_LEVELS
    tolerance: float = TOLERANCE
    weights: tuple = WEIGHTS


def weight_table(delta: float, r_levels: int) -> tuple:
    """WEIGHTS by its formula (tests compare; measurements use other deltas)."""
    import math

    return tuple(round(2**24 * math.exp(-delta * j)) for j in range(r_levels + 1))


def distribution(logits, shift: float, params: Params):
    """One position's grid distribution (CODEC.md): from a row of float32 logits (numpy),
    the candidate token ids ascending, the float64 probabilities of the candidates and then
    of ESCAPE, and whether every logit that could change them is >= tolerance from a grid
    line (candidates on both sides, the level just below them on its upper side)."""
    import numpy

    x = logits.astype(numpy.float64) / params.delta + shift  # exact: delta is a power of two
    q = numpy.floor(x)
    rel = q.max() - q
    candidates = numpy.flatnonzero(rel <= params.r_levels)
    weights = numpy.asarray(params.weights, dtype=numpy.int64)[rel[candidates].astype(numpy.int64)]
    escape = (int(weights.sum()) >> 6) + int(params.weights[-1]) * len(candidates)
    weights = numpy.append(weights, escape)
    near = numpy.flatnonzero(rel <= params.r_levels + 1)
    up = (q[near] + 1 - x[near]) * params.delta
    down = (x[near] - q[near]) * params.delta
    safe = bool(numpy.all(up >= params.tolerance)
                and numpy.all((down >= params.tolerance) | (rel[near] == params.r_levels + 1)))
    return candidates, weights / weights.sum(), safe


def band(logits, shift: float, params: Params):
    """The token ids (ascending) of levels R + 1 ... R + BAND_LEVELS below the top, and
    whether the band's lower edge is safe: its lowest level's tokens on their lower side
    and the level below on its upper side (its upper edge is checked with the grid)."""
    import numpy

    x = logits.astype(numpy.float64) / params.delta + shift
    q = numpy.floor(x)
    rel = q.max() - q
    low = params.r_levels + BAND_LEVELS
    ids = numpy.flatnonzero((rel > params.r_levels) & (rel <= low))
    edge = numpy.flatnonzero(rel == low)
    below = numpy.flatnonzero(rel == low + 1)
    safe = bool(numpy.all((x[edge] - q[edge]) * params.delta >= params.tolerance)
                and numpy.all((q[below] + 1 - x[below]) * params.delta >= params.tolerance))
    return ids, safe


class Decoder(RowDecoder):
    """Scheme 1's decoder for one chunk: ``decoder(position, row)`` is the token at that
    position from its (V,) float32 logits (0 once ``failed``)."""

    shifts = SHIFTS

    def __init__(self, coded: bytes):
        super().__init__(coded)
        self.band_counts = list(BAND_START)

    def _grid(self, row, mode: int) -> int | None:
        import constriction

        candidates, probs, _ = distribution(row, SHIFTS[mode], Params())
        symbol = int(self.coder.decode(categorical(probs)))
        if symbol < len(candidates):
            return int(candidates[symbol])
        flag = int(self.coder.decode(counts_model(self.band_counts)))
        self.band_counts[flag] += 1
        if flag == 0:
            ids, _ = band(row, SHIFTS[mode], Params())
            return int(ids[int(self.coder.decode(constriction.stream.model.Uniform(len(ids))))])
        return None  # the raw id
