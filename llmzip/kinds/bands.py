"""Scheme 2 of a token coded under the model's logits (format/CODEC.md, "Kind lm", scheme 2):
sequential band decisions, computed for many positions at once.

The levels (grid of step DELTA, relative to the top level) are grouped into bands at EDGES;
a token is coded as "in this band / deeper" decisions down to its band, each with the
quantised log-odds of the two sides' softmax masses, then its index in the band, uniformly.
Only the edges on the token's path and those log-odds must be safe (keep the tolerance from
their grid lines), not every candidate, so a decoder whose logits drift by less than the
tolerance makes the same decisions bit for bit.

Where the time goes, and so the shape of this module: the only work over the whole
vocabulary is each position's *tables* (:class:`BandTables`: each token's level, and the
mass, count and safety of each of the 49 levels), built in torch for all the positions
of a batch at once, on the device that holds the logits. The decisions themselves
(:func:`walk`) read 49-entry lists, so the Python left per position is a few dozen list
reads and the range coder's symbols. :func:`code_positions` codes many positions of many
chunks from one (P, V) block of logits (the encoder's teacher-forced pass);
:func:`decode_positions` decodes one step of many rows (the decoder's KV-cache loop).

Kinds ``lm`` (schemes 2 and 3) and ``memory-int-lm`` (its corrected tokens) code with this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmzip.kinds.rangecode import DELTA, MODE_START, MODE_STEP, TOLERANCE, RowDecoder, categorical, counts_model, \
    pack_words

EDGES = (0, 1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 32, 48)  # band b: relative levels EDGES[b] ... EDGES[b+1] - 1
LEVELS = EDGES[-1]  # relative levels are clipped to 0..LEVELS
DEEP = 8  # decisions about bands >= DEEP are preceded by a flag; an unsafe edge there is skipped
GAMMA = 0.5  # step of the log-odds grid
K_MAX = 20  # log-odds levels clamped to [-K_MAX, K_MAX - 1]
FLAG_START = (8, 1)  # adaptive counts of (safe, skipped edge) per deep decision, +1 per use
BAND_SHIFTS = (0.0, 0.5)  # the grids a position may use, in steps (exact in float64)
RAW = len(BAND_SHIFTS)  # the mode of a token coded as its raw id
# A bound on how far float32 masses (scheme 3) move a log-odds: a mass exp(L - c) rounds its
# argument by at most 2**-18 where |L - c| < 128 (smaller terms are below e**-128 of the top
# level's and cannot matter) and its exponential by ~1e-7, so every level's mass moves by a
# relative 4e-6 at most, and a log-odds by twice that. Scheme 3's writer keeps 2 x tolerance
# + ROUNDING from the odds grid (float64 masses: 2 x tolerance + 1e-9).
ROUNDING = 1e-5


def _odds_table() -> tuple:
    """IN_WEIGHT[k + K_MAX] = round(2**24 * sigmoid((k + 1/2) GAMMA)), in decimal
    arithmetic (correctly rounded everywhere, no libm)."""
    from decimal import Decimal, localcontext

    with localcontext() as context:
        context.prec = 40
        return tuple(int((Decimal(2**24) / (1 + (-(Decimal(k) + Decimal("0.5")) * Decimal(GAMMA)).exp()))
                         .to_integral_value()) for k in range(-K_MAX, K_MAX))


IN_WEIGHT = _odds_table()


@dataclass
class Stats:
    """What encoding cost, for measurements: positions per outcome and ideal bits."""

    tokens: int = 0
    outcomes: list = None  # [grid A, grid B, escape inside a grid, raw escape (mode 2), of escapes: in the band]
    ideal_bits: float = 0.0  # -log2 p(token) under the model's softmax (cross-entropy)
    quantised_bits: float = 0.0  # -log2 of the quantised distribution's p(symbol), incl. in-grid escapes
    mode_bits: float = 0.0  # the mode symbols' ideal cost
    escape_bits: float = 0.0  # after ESCAPE: the band flag, the band index or the raw id

    def __post_init__(self):
        self.outcomes = self.outcomes or [0, 0, 0, 0, 0]


# ------------------------------------------------------------------------- the tables


@dataclass(frozen=True)
class Bands:
    """One position on one grid: per relative level 0..LEVELS, the softmax mass (relative
    to the top level's upper line, so each <= 1) and the number of tokens, and whether
    some logit lies within the tolerance of the level's upper grid line."""

    mass: list  # (LEVELS + 1,) float
    count: list  # (LEVELS + 1,) int
    unsafe: list | None  # (LEVELS + 1,) bool; None in the decoder's tables, which never read it
    shift: float
    odds_margin: float  # the distance a log-odds must keep from its grid: 2x the tolerance + rounding

    def size(self, upper: int, lower: int | None) -> int:
        return sum(self.count[upper:lower])

    def odds(self, upper: int, lower: int) -> tuple[int, bool]:
        """The log-odds level of "in levels upper..lower-1" against "deeper", and whether
        it keeps the odds margin from the grid of step GAMMA (shifted like the logits'
        grid, so that another grid also helps a log-odds close to a line)."""
        inside, deeper = math.fsum(self.mass[upper:lower]), math.fsum(self.mass[lower:])
        log_odds = math.log(max(inside, 1e-300)) - math.log(max(deeper, 1e-300))
        y = log_odds / GAMMA + self.shift
        k = math.floor(y)
        safe = min(y - k, k + 1 - y) * GAMMA >= self.odds_margin
        return max(-K_MAX, min(K_MAX - 1, k)), safe


class BandTables:
    """The tables of P positions, each on its own grid, from their (P, V) float32 logits,
    on the logits' device: every token's relative level and each position's
    :class:`Bands`. The levels and the grid lines near a logit are exact either way (DELTA
    is a power of two, the shifts multiples of 1/2: ``L / DELTA + shift`` is exact in
    float32 while ``|L|`` < 2**21). The masses are float64 throughout (scheme 2, and kind
    memory-int-lm, as CODEC.md specifies them), or with ``fast`` float32 exponentials
    summed in float64 (scheme 3; the writer's odds margin covers it: :data:`ROUNDING`).
    ``tolerance`` None builds the decoder's tables: no safety, which only the writer checks
    (a third of the work on the decoder's (b, V) logits)."""

    def __init__(self, logits, shifts: list, tolerance: float | None = TOLERANCE, fast: bool = False):
        import torch

        n, device = len(shifts), logits.device
        if not fast or not bool(logits.abs().amax() < 2**21):  # (also NaN) where float32 levels would round
            logits = logits.double()
        shift = torch.tensor(shifts, dtype=logits.dtype, device=device)[:, None]  # (P, 1)
        x = logits / DELTA + shift  # (P, V), exact
        level = x.floor()  # (P, V)
        top = level.amax(dim=-1, keepdim=True)  # (P, 1): floor(max x)
        rel = (top - level).clamp_(max=LEVELS)  # (P, V) relative level, exact
        slot = (rel + torch.arange(n, device=device, dtype=rel.dtype)[:, None] * (LEVELS + 1)).view(-1).long()
        mass = torch.exp(logits - (top + 1 - shift) * DELTA).view(-1).double()  # (P * V,), each <= 1
        mass = torch.bincount(slot, weights=mass, minlength=n * (LEVELS + 1)).view(n, LEVELS + 1)
        count = torch.bincount(slot, minlength=n * (LEVELS + 1)).view(n, LEVELS + 1)
        self.rel = rel.to(torch.uint8)  # (P, V)
        if tolerance is None:
            self.rows = [Bands(m, c, None, s, math.inf) for m, c, s in zip(mass.tolist(), count.tolist(), shifts)]
            return
        # The grid lines some logit lies within the tolerance of, as relative levels (few).
        nearest = x.round()  # half to even; a logit halfway between lines is far from both
        row, column = ((x - nearest).abs_() < tolerance / DELTA).nonzero(as_tuple=True)  # (K,), (K,)
        line = (top[row, 0] + 1 - nearest[row, column]).clamp_(0, LEVELS + 1).long()  # (K,); LEVELS + 1: deeper
        unsafe = torch.zeros(n, LEVELS + 2, dtype=torch.bool, device=device)  # (P, LEVELS + 2)
        unsafe[row, line] = True
        margin = 2 * tolerance + (ROUNDING if fast else 1e-9)
        self.rows = [Bands(m, c, u, s, margin) for m, c, u, s in
                     zip(mass.tolist(), count.tolist(), unsafe[:, : LEVELS + 1].tolist(), shifts)]

    def levels(self, tokens: list) -> list:
        """Each position's token's relative level."""
        import torch

        index = torch.tensor(tokens, device=self.rel.device)[:, None]  # (P, 1)
        return self.rel.gather(1, index)[:, 0].tolist()

    def indices(self, rows: list, bands: list, tokens: list) -> list:
        """Each token's index among its band's ids, ascending (the encoder's last symbol):
        the band's ids below it, counted over the ids below it only."""
        found = []
        for k, (upper, lower), token in zip(rows, bands, tokens):
            below = self.rel[k, :token]  # (token,)
            found.append(int(((below >= upper) if lower is None else (below >= upper) & (below < lower)).sum()))
        return found

    def members(self, rows: list, bands: list, indices: list) -> list:
        """The id at each index among its band's ids, ascending (the decoder's last step)."""
        found = []
        for k, (upper, lower), index in zip(rows, bands, indices):
            rel = self.rel[k]  # (V,)
            ids = (((rel >= upper) if lower is None else (rel >= upper) & (rel < lower))).nonzero()  # (n, 1)
            found.append(int(ids[index, 0]))
        return found


# ------------------------------------------------------------------------- the decisions


def walk(bands: Bands, choose, level: int | None = None):
    """The band decisions of scheme 2 (CODEC.md), shared by encoder and decoder: returns the
    token's band ``(upper, lower)`` (``lower`` None: to the bottom). ``choose(what, arg,
    truth)`` codes or decodes one symbol and returns it: ``what`` is "flag" (arg: the edge
    index; truth: the edge is skipped) or "odds" (arg: the log-odds level; truth: 0 in the
    band, 1 deeper). ``level`` is the encoder's token's (None in the decoder), whose truths
    it gives; there a shallow decision that is not safe returns None (the grid fails)."""
    upper, j = 0, 1
    if level is not None and bands.unsafe[0]:  # the top level itself
        return None
    while j < len(EDGES):
        lower = EDGES[j]
        n_in, n_deeper = bands.size(upper, lower), bands.size(lower, None)
        if level is not None:
            safe = not bands.unsafe[lower] and (n_in == 0 or n_deeper == 0 or bands.odds(upper, lower)[1])
        if j - 1 >= DEEP:
            if choose("flag", j, None if level is None else int(not safe)) == 1:
                j += 1  # the edge is skipped: this band runs on to the next edge
                continue
        elif level is not None and not safe:
            return None
        if n_in:
            deeper = 0 if n_deeper == 0 else choose("odds", bands.odds(upper, lower)[0],
                                                     None if level is None else int(level >= lower))
            if deeper == 0:
                return upper, lower
        upper, j = lower, j + 1
    return upper, None


def _odds_model(k: int):
    import numpy

    weight = IN_WEIGHT[k + K_MAX]
    return categorical(numpy.array([weight, 2**24 - weight], dtype=numpy.float64) / 2**24)


class _BandCoding:
    """The adaptive state both sides keep per chunk: the mode counts (the grids of
    BAND_SHIFTS, then the raw id) and each deep edge's flag counts."""

    shifts = BAND_SHIFTS

    def __init__(self):
        self.counts = [MODE_START[0]] + [MODE_START[1]] * len(self.shifts)
        self.flags = {j: list(FLAG_START) for j in range(DEEP + 1, len(EDGES))}

    def model(self, what: str, arg: int):
        import constriction

        if what == "flag":
            return counts_model(self.flags[arg])
        if what == "odds":
            return _odds_model(arg)
        return constriction.stream.model.Uniform(arg)

    def update(self, what: str, arg: int, symbol: int) -> None:
        if what == "flag":
            self.flags[arg][symbol] += 1

    def cost(self, what: str, arg: int, symbol: int) -> float:
        """Bits of one symbol under its model (measurements)."""
        if what == "flag":
            return -math.log2(self.flags[arg][symbol] / sum(self.flags[arg]))
        if what == "odds":
            weight = IN_WEIGHT[arg + K_MAX]
            return -math.log2((weight if symbol == 0 else 2**24 - weight) / 2**24)
        return math.log2(arg)


# ------------------------------------------------------------------------- encoding


class BandEncoder(_BandCoding):
    """The encoder of one chunk (or, kind memory-int-lm, of a record's corrected tokens):
    :func:`code_positions` plans its positions, :meth:`write` codes each plan."""

    def __init__(self, stats: Stats | None = None, coder=None, tolerance: float = TOLERANCE, fast: bool = False):
        """Into a new range encoder, or into ``coder`` after what it holds (kind
        memory-int-lm), keeping ``tolerance`` from every grid line, with ``fast`` tables
        (:class:`BandTables`; scheme 3)."""
        import constriction

        super().__init__()
        self.stats, self.tolerance, self.fast = stats, tolerance, fast
        self.coder = coder if coder is not None else constriction.stream.queue.RangeEncoder()

    def encode(self, token: int, row) -> int:
        """Code ``token`` under one position's (V,) float32 logits (numpy); returns it."""
        import torch

        code_positions([self], [token], torch.from_numpy(row)[None])
        return token

    def write(self, token: int, mode: int, symbols: list, vocab: int) -> None:
        """Code one position: its mode, then its band's decisions and index (a grid) or its
        raw id (mode RAW)."""
        import constriction

        stats = self.stats
        if stats is not None:
            stats.tokens += 1
            stats.mode_bits -= math.log2(self.counts[mode] / sum(self.counts))
        self.coder.encode(mode, counts_model(self.counts))
        self.counts[mode] += MODE_STEP
        if mode == RAW:
            self.coder.encode(token, constriction.stream.model.Uniform(vocab))
            if stats is not None:
                stats.escape_bits += math.log2(vocab)
                stats.outcomes[3] += 1
            return
        for what, arg, truth in symbols:
            if stats is not None:
                if what == "flag":
                    stats.escape_bits += self.cost(what, arg, truth)
                    stats.outcomes[2] += truth
                else:
                    stats.quantised_bits += self.cost(what, arg, truth)
            self.coder.encode(truth, self.model(what, arg))
            self.update(what, arg, truth)
        if stats is not None:
            stats.outcomes[min(mode, 1)] += 1

    def coded(self) -> bytes:
        return pack_words(self.coder.get_compressed())


def code_positions(encoders: list, tokens: list, logits) -> None:
    """Code ``tokens[p]`` under ``logits[p]`` ((P, V) float32, any device) into
    ``encoders[p]`` (all of one tolerance and arithmetic); an encoder that appears more than
    once gets its positions in the order given. Each position takes grid A if every decision on its token's path is safe,
    else grid B, else its raw id (CODEC.md, "What the writer guarantees"): the choice
    depends only on the position's logits, so the positions are planned together, grid by
    grid, before any is coded."""
    plans = [(RAW, ())] * len(tokens)
    todo = list(range(len(tokens)))
    for mode, shift in enumerate(BAND_SHIFTS):
        if not todo:
            break
        tables = BandTables(logits[todo], [shift] * len(todo), encoders[0].tolerance, encoders[0].fast)
        found = []  # (row in tables, position, band, symbols)
        for k, (p, level) in enumerate(zip(todo, tables.levels([tokens[p] for p in todo]))):
            symbols = []
            band = walk(tables.rows[k], lambda what, arg, truth: symbols.append((what, arg, truth)) or truth, level)
            if band is not None:
                found.append((k, p, band, symbols))
        indices = tables.indices([k for k, *_ in found], [band for _, _, band, _ in found],
                                 [tokens[p] for _, p, _, _ in found])
        for (k, p, band, symbols), index in zip(found, indices):
            size = tables.rows[k].size(*band)
            plans[p] = (mode, symbols + [("index", size, index)] if size > 1 else symbols)
        todo = [p for p in todo if plans[p][0] == RAW]
    vocab = logits.shape[-1]
    if any(encoder.stats is not None for encoder in encoders):
        _ideal_bits(encoders, tokens, logits)
    for encoder, token, (mode, symbols) in zip(encoders, tokens, plans):
        encoder.write(token, mode, symbols, vocab)


def _ideal_bits(encoders: list, tokens: list, logits) -> None:
    """Add each token's -log2 p under the model's softmax to its encoder's stats."""
    import torch

    index = torch.tensor(tokens, device=logits.device)[:, None]  # (P, 1)
    logp = torch.log_softmax(logits.double(), dim=-1).gather(1, index)[:, 0].tolist()  # (P,)
    for encoder, value in zip(encoders, logp):
        if encoder.stats is not None:
            encoder.stats.ideal_bits -= value / math.log(2)


# ------------------------------------------------------------------------- decoding


class BandDecoder(RowDecoder, _BandCoding):
    """The decoder of one chunk (or of a memory-int-lm record's corrected tokens):
    :func:`decode_positions` runs it for a step of many rows; ``decoder(position, row)``
    decodes one position from its (V,) float32 logits (numpy) alone (0 once ``failed``)."""

    def __init__(self, coded: bytes, coder=None, fast: bool = False):
        """Over ``coded`` (or ``coder``: see :class:`RowDecoder`), with ``fast`` tables
        (:class:`BandTables`; scheme 3)."""
        RowDecoder.__init__(self, coded, coder)
        _BandCoding.__init__(self)
        self.fast = fast

    def __call__(self, position: int, row) -> int:
        import torch

        return decode_positions([self], torch.from_numpy(row)[None])[0]

    def _choose(self, what: str, arg: int, truth) -> int:
        symbol = int(self.coder.decode(self.model(what, arg)))
        self.update(what, arg, symbol)
        return symbol

    def band(self, bands: Bands):
        """The band decisions and the index in the band: ``(band, index)``."""
        band = walk(bands, self._choose)
        size = bands.size(*band)
        return band, (self._choose("index", size, None) if size > 1 else 0)


def decode_positions(decoders: list, logits) -> list:
    """One position of each row: ``decoders[j]``'s token from ``logits[j]`` ((b, V)
    float32, any device), all of one arithmetic. A row whose code fails (see
    :class:`RowDecoder`) gives 0 from then on."""
    modes = [decoder.guard(decoder.mode) for decoder in decoders]  # None: the row has failed
    tokens = [0] * len(decoders)
    for j, (decoder, mode) in enumerate(zip(decoders, modes)):
        if mode == RAW:
            tokens[j] = decoder.guard(decoder.raw, logits.shape[-1]) or 0
    grid = [j for j, mode in enumerate(modes) if mode is not None and mode != RAW]
    if grid:
        rows = logits if len(grid) == len(modes) else logits[grid]  # (g, V): no copy when every row takes a grid
        tables = BandTables(rows, [BAND_SHIFTS[modes[j]] for j in grid], tolerance=None, fast=decoders[0].fast)
        found = [(k, j, decoders[j].guard(decoders[j].band, tables.rows[k])) for k, j in enumerate(grid)]
        found = [(k, j, *decided) for k, j, decided in found if decided is not None]  # (k, j, band, index)
        ids = tables.members([k for k, *_ in found], [band for _, _, band, _ in found], [i for *_, i in found])
        for (_, j, _, _), token in zip(found, ids):
            tokens[j] = token
    return tokens
