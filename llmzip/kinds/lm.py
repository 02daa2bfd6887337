"""Kind ``lm`` (code 3): a chunk's tokens entropy-coded under the model's next-token
distribution, drift-robust by construction.

Each chunk is coded alone: the model sees BOS and the chunk's own earlier tokens, so lm
chunks decode in batches, one step per token for all chunks of a group (like memory
chunks). The coding distribution at a position is built from the float32 logits quantised
to a grid of step ``DELTA``: the tokens in the top ``R_LEVELS + 1`` levels, weighted from a
fixed integer table by their level below the top. The encoder codes a position with that
distribution only where every logit that could change it lies at least ``TOLERANCE`` from a
grid line, so a decoder whose logits drift by less than ``TOLERANCE`` builds the same
distribution bit for bit; elsewhere it switches to a second grid shifted by half a step, or
codes the token id uniformly. A token outside the candidates is an ESCAPE symbol, then its
index in the band of the next ``BAND_LEVELS`` levels (coded uniformly, so only the band's
lower edge must be safe), or its id. format/CODEC.md, "Kind lm", is the contract;
``constriction``'s range coder does the arithmetic.

That is scheme 1 (format 2.1 as first written, still read). New archives use scheme 2
(:func:`_walk`): "in this band / deeper" decisions with the quantised log-odds of the two
sides' softmax masses, then a uniform index in the band, so only the edges on the token's
path must be safe. The recorded settings select the scheme (:func:`scheme_of`).

The record's fields: varint n_tokens, then the coder's compressed 32-bit words as
little-endian bytes with up to 3 trailing zero bytes of the last word dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmzip import container
from llmzip.errors import FormatError
from llmzip.kinds.base import Kind, Restored, WireContext, check_token_counts, decode_group
from llmzip.kinds.rangecode import categorical, counts_model, pack_words, unpack_words

# Quantisation (CODEC.md, "Kind lm"). DELTA is a power of two, so logit / DELTA and the
# half-step shift are exact in float64 and the levels are the same on every machine.
DELTA = 0.5
R_LEVELS = 8  # levels below the top that are candidates: 4 logits
TOLERANCE = 1e-4  # distance every relevant logit keeps from a grid line (4x the measured batch-shape drift)
# WEIGHTS[j] = round(2**24 * exp(-DELTA * j)): the weight of a candidate j levels below the
# top. Written out so that no libm is involved (tests check it against the formula).
WEIGHTS = (16777216, 10175896, 6171993, 3743503, 2270549, 1377158, 835288, 506628, 307285)
# The mode of each position: 0 grid A (no shift), 1 grid B (shifted by DELTA / 2), 2 escape
# (the token id coded uniformly). Adaptive counts, start MODE_START, +MODE_STEP per use.
MODE_START = (64, 1, 1)
MODE_STEP = 64
SHIFTS = (0.0, 0.5)  # grid shift of modes 0 and 1, in steps
# After ESCAPE in a grid: the band of the next BAND_LEVELS levels below the candidates, its
# tokens coded uniformly (only the band's lower edge must be safe), or else the raw id.
BAND_LEVELS = 8
BAND_START = (4, 1)  # adaptive counts of (band, raw id), +1 per use



def _settings(delta, levels, band_levels, tolerance) -> dict:
    return {container.SETTINGS_KEYS[name]: value
            for name, value in (("lm_delta", delta), ("lm_levels", levels), ("lm_band_levels", band_levels),
                                ("lm_tolerance", tolerance))}


# Scheme 2 (CODEC.md, "Kind lm", scheme 2): sequential band decisions. The levels (grid of
# step DELTA, relative to the top level) are grouped into bands at EDGES; a token is coded
# as "in this band / deeper" decisions down to its band, each with the quantised log-odds
# of the two sides' softmax masses, then its index in the band, uniformly. Only the band
# edges the token's path crosses and those log-odds must be safe, not every candidate.
EDGES = (0, 1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 32, 48)  # band b: relative levels EDGES[b] ... EDGES[b+1] - 1
DEEP = 8  # decisions about bands >= DEEP are preceded by a flag; an unsafe edge there is skipped
GAMMA = 0.5  # step of the log-odds grid
K_MAX = 20  # log-odds levels clamped to [-K_MAX, K_MAX - 1]
ODDS_MARGIN = 2 * TOLERANCE + 1e-9  # log-odds move by at most 2x the logits' drift (+ float rounding)
FLAG_START = (8, 1)  # adaptive counts of (safe, skipped edge) per deep decision, +1 per use
BAND_SHIFTS = (0.0, 0.5)  # the grids a position may use, in steps (exact in float64)


def _odds_table() -> tuple:
    """IN_WEIGHT[k + K_MAX] = round(2**24 * sigmoid((k + 1/2) GAMMA)), in decimal
    arithmetic (correctly rounded everywhere, no libm)."""
    from decimal import Decimal, localcontext

    with localcontext() as context:
        context.prec = 40
        return tuple(int((Decimal(2**24) / (1 + (-(Decimal(k) + Decimal("0.5")) * Decimal(GAMMA)).exp()))
                         .to_integral_value()) for k in range(-K_MAX, K_MAX))


IN_WEIGHT = _odds_table()
SETTINGS_V1 = _settings(DELTA, R_LEVELS, BAND_LEVELS, TOLERANCE)  # format 2.1 as first written
SETTINGS = _settings(DELTA, EDGES[-1], len(EDGES), TOLERANCE)  # what new lm chunks are coded with
SCHEMES = {1: SETTINGS_V1, 2: SETTINGS}  # the recorded settings select the scheme
LM_CHUNK_TOKENS = 1024  # chunk budget of --codec lm by default (BENCHMARKS.md, "LM coding")


@dataclass(frozen=True)
class LmChunk:
    """A chunk stored as its tokens' range-coded bits."""

    coded: bytes  # the range coder's words, little-endian, last word's trailing zeros dropped
    n_tokens: int
    length: int  # bytes of the chunk's text
    check: int  # container.chunk_check() of the chunk's bytes


class LmKind(Kind):
    name = "lm"
    code = 3
    minor = 1  # defined in format 2.1
    chunk_type = LmChunk
    needs_model = True

    # ---------------------------------------------------------------- wire half

    def encode_fields(self, chunk: LmChunk, ctx: WireContext) -> bytes:
        self._check(chunk, "lm chunk")
        return container.varint(chunk.n_tokens) + chunk.coded

    def decode_fields(self, fields, length, check, ctx, where) -> LmChunk:
        if tuple(ctx.version) < (2, self.minor):
            raise FormatError(f"{where}: kind lm (3) is not defined in format {ctx.version[0]}.{ctx.version[1]}")
        n_tokens, head = container.read_varint(fields, 0, f"{where}: n_tokens")
        chunk = LmChunk(bytes(fields[head:]), n_tokens, length, check)
        self._check(chunk, where)
        return chunk

    def _check(self, chunk: LmChunk, where: str) -> None:
        container.check_int(chunk.n_tokens, f"{where}: n_tokens", 1, container.MAX_TOKENS_PER_CHUNK)
        if not isinstance(chunk.coded, bytes):
            raise FormatError(f"{where}: coded is {type(chunk.coded).__name__}, not bytes")

    def stored_bytes(self, chunk: LmChunk) -> int:
        return len(chunk.coded)

    def work(self, chunk: LmChunk) -> int:
        return chunk.n_tokens

    # ---------------------------------------------------------------- model half

    def check_before_model(self, items, archive) -> None:
        scheme_of(archive.header.settings)
        check_token_counts(items)

    def restore(self, items, loaded, archive, on_done=None):
        from llmzip.kinds.memory import DEFAULT_DECODE_GROUP, MAX_DECODE_GROUP

        group = decode_group(archive, DEFAULT_DECODE_GROUP, MAX_DECODE_GROUP)
        chunks = [chunk for _, chunk in items]
        token_lists = self.decode(loaded, chunks, group, on_done=on_done, scheme=scheme_of(archive.header.settings))
        for (index, _), ids in zip(items, token_lists):
            yield Restored(index, b"" if ids is None else _text_bytes(loaded, ids))

    def decode(self, loaded, chunks: list, group: int, on_done=None, scheme: int = 2) -> list:
        """The decode computation of CODEC.md: consecutive groups of ``group`` chunks, each
        decoded as one batch. Returns each chunk's token ids, or None where the coded bits
        are not a valid code (the codec's checks then refuse the chunk)."""
        results = []
        for start in range(0, len(chunks), group):
            results += decode_batch(loaded.model, chunks[start : start + group], on_step=on_done, scheme=scheme)
        return results

    def encode(self, loaded, token_lists, group: int, params: Params | None = None, stats: Stats | None = None,
               on_done=None, scheme: int = 2) -> list:
        """The coded bytes of each token list, in consecutive groups of ``group`` run as
        the decoder runs them; the codec verifies them with :meth:`decode` before storing.
        New archives use scheme 2; scheme 1 (format 2.1 as first written) for tests."""
        coded = []
        for start in range(0, len(token_lists), group):
            coded += encode_batch(loaded.model, token_lists[start : start + group], params, stats, on_step=on_done,
                                  scheme=scheme)
        return coded


def scheme_of(settings: dict) -> int:
    """The coding scheme an archive's recorded settings select (CODEC.md, "Kind lm")."""
    recorded = {key: settings.get(key) for key in SETTINGS}
    for scheme, values in SCHEMES.items():
        if recorded == values:
            return scheme
    raise FormatError(f"lm chunks coded with settings {recorded}; this llmzip decodes {list(SCHEMES.values())}")


# ------------------------------------------------------------------------- the computation


@dataclass(frozen=True)
class Params:
    """The quantisation (CODEC.md); other values only for measurements (bench/lm_coding.py)."""

    delta: float = DELTA
    r_levels: int = R_LEVELS
    tolerance: float = TOLERANCE
    weights: tuple = WEIGHTS


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


class _Encoder:
    """Codes one chunk's tokens, position by position, from the logits the shared loop gives."""

    def __init__(self, token_ids, params: Params, stats: Stats | None):
        import constriction

        self.tokens, self.params, self.stats = list(token_ids), params, stats
        self.coder = constriction.stream.queue.RangeEncoder()
        self.counts = list(MODE_START)
        self.band_counts = list(BAND_START)

    def __call__(self, position: int, row) -> int:
        import math

        import constriction
        import numpy

        token, stats = self.tokens[position], self.stats
        mode, symbol, probs = 2, None, None
        for m, shift in enumerate(SHIFTS):
            candidates, probs, safe = distribution(row, shift, self.params)
            if safe:
                index = int(numpy.searchsorted(candidates, token))
                found = index < len(candidates) and candidates[index] == token
                mode, symbol = m, index if found else len(candidates)  # the last symbol is ESCAPE
                break
        if stats is not None:
            stats.tokens += 1
            stats.mode_bits -= math.log2(self.counts[mode] / sum(self.counts))
            shifted = row.astype(numpy.float64) - row.max()
            stats.ideal_bits -= (shifted[token] - math.log(numpy.exp(shifted).sum())) / math.log(2)
        self.coder.encode(mode, counts_model(self.counts))
        self.counts[mode] += MODE_STEP
        escaped = mode == 2 or symbol == len(probs) - 1
        if mode != 2:
            self.coder.encode(symbol, categorical(probs))
            if stats is not None:
                stats.quantised_bits -= math.log2(probs[symbol])
        if escaped and mode != 2:  # the band, or the raw id
            ids, safe = band(row, SHIFTS[mode], self.params)
            index = int(numpy.searchsorted(ids, token))
            in_band = safe and index < len(ids) and ids[index] == token
            flag = 0 if in_band else 1
            if stats is not None:
                stats.escape_bits -= math.log2(self.band_counts[flag] / sum(self.band_counts))
            self.coder.encode(flag, counts_model(self.band_counts))
            self.band_counts[flag] += 1
            if in_band:
                self.coder.encode(index, constriction.stream.model.Uniform(len(ids)))
                if stats is not None:
                    stats.escape_bits += math.log2(len(ids))
                    stats.outcomes[4] += 1
                escaped = False
        if escaped:
            self.coder.encode(token, constriction.stream.model.Uniform(row.shape[-1]))
            if stats is not None:
                stats.escape_bits += math.log2(row.shape[-1])
        if stats is not None:
            stats.outcomes[3 if mode == 2 else 2 if escaped or symbol == len(probs) - 1 else mode] += 1
        return token

    def coded(self) -> bytes:
        return pack_words(self.coder.get_compressed())


class _RowDecoder:
    """Decodes one chunk's tokens; a corrupt code marks it failed (its checksum then refuses
    it). The mode and the raw id are common to both schemes; :meth:`_grid` is the rest."""

    shifts = SHIFTS

    def __init__(self, coded: bytes, coder=None):
        """Over ``coded``, or, given ``coder``, over what is left of that range decoder (a
        code shared with other symbols: kind memory-int-lm)."""
        import constriction

        self.coder = coder if coder is not None else constriction.stream.queue.RangeDecoder(unpack_words(coded))
        self.counts = [MODE_START[0]] + [MODE_START[1]] * len(self.shifts)  # the grids, then the raw id
        self.failed = False

    def __call__(self, position: int, row) -> int:
        import constriction

        if self.failed:
            return 0
        try:
            mode = int(self.coder.decode(counts_model(self.counts)))
            self.counts[mode] += MODE_STEP
            token = None if mode == len(self.shifts) else self._grid(row, mode)
            if token is None:
                token = int(self.coder.decode(constriction.stream.model.Uniform(row.shape[-1])))
            if not 0 <= token < row.shape[-1]:
                raise ValueError(token)
            return token
        except Exception:  # noqa: BLE001 - constriction raises on a corrupt or exhausted code
            self.failed = True
            return 0


class _Decoder(_RowDecoder):
    """Scheme 1's decoder for one chunk."""

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


class _Bands:
    """One row of logits on one grid of scheme 2 (CODEC.md): each token's level below the
    top (clipped at EDGES[-1]), the softmax mass and count of each level, and the edges
    (relative levels) with a logit within TOLERANCE of their grid line."""

    def __init__(self, row, shift: float):
        import numpy

        logits = row.astype(numpy.float64)
        x = logits / DELTA + shift  # exact: DELTA is a power of two, shift a multiple of 1/2
        top = numpy.floor(x.max())
        self.rel = numpy.minimum(top - numpy.floor(x), EDGES[-1]).astype(numpy.int64)
        mass = numpy.exp(logits - (top + 1 - shift) * DELTA)  # <= 1
        self.mass = numpy.bincount(self.rel, weights=mass, minlength=EDGES[-1] + 1).tolist()
        self.count = numpy.bincount(self.rel, minlength=EDGES[-1] + 1).tolist()
        self.shift = shift
        near = numpy.abs(x - numpy.rint(x)) < TOLERANCE / DELTA
        self.unsafe = set((top + 1 - numpy.rint(x[near])).astype(numpy.int64).tolist())

    def odds(self, upper: int, lower: int):
        """The log-odds level of "in levels upper..lower-1" against "deeper", and whether
        it keeps ODDS_MARGIN from the grid of step GAMMA (shifted like the logits' grid, so
        that another grid also helps a log-odds close to a line)."""
        import math

        inside, deeper = math.fsum(self.mass[upper:lower]), math.fsum(self.mass[lower:])
        log_odds = math.log(max(inside, 1e-300)) - math.log(max(deeper, 1e-300))
        y = log_odds / GAMMA + self.shift
        k = math.floor(y)
        safe = min(y - k, k + 1 - y) * GAMMA >= ODDS_MARGIN
        return max(-K_MAX, min(K_MAX - 1, k)), safe

    def members(self, upper: int, lower: int | None):
        import numpy

        rel = self.rel
        return numpy.flatnonzero((rel >= upper) if lower is None else (rel >= upper) & (rel < lower))


def _walk(bands: _Bands, choose, token: int | None = None):
    """The band decisions of scheme 2 (CODEC.md), shared by encoder and decoder.
    ``choose(what, arg, truth)`` codes or decodes one symbol and returns it: ``what`` is
    "flag" (arg: the edge index; truth: the edge is safe), "odds" (arg: the log-odds level;
    truth: 0 in the band, 1 deeper) or "index" (arg: the band's size; truth: the token's
    index in it). ``token`` is the encoder's (None in the decoder), whose truths it gives;
    there a shallow decision that is not safe returns None. Returns the token id."""
    level = None if token is None else int(bands.rel[token])
    upper, j = 0, 1
    if token is not None and 0 in bands.unsafe:  # the top level itself
        return None
    while j < len(EDGES):
        lower = EDGES[j]
        if token is not None:
            n_in, n_deeper = sum(bands.count[upper:lower]), sum(bands.count[lower:])
            safe = lower not in bands.unsafe and (n_in == 0 or n_deeper == 0 or bands.odds(upper, lower)[1])
        if j - 1 >= DEEP:
            if choose("flag", j, None if token is None else int(not safe)) == 1:
                j += 1  # the edge is skipped: this band runs on to the next edge
                continue
        elif token is not None and not safe:
            return None
        n_in, n_deeper = sum(bands.count[upper:lower]), sum(bands.count[lower:])
        if n_in:
            deeper = 0 if n_deeper == 0 else choose("odds", bands.odds(upper, lower)[0],
                                                     None if token is None else int(level >= lower))
            if deeper == 0:
                break
        upper, j = lower, j + 1
    else:
        lower = None
    ids = bands.members(upper, lower)
    if len(ids) == 1:  # (no symbol)
        return int(ids[0])
    index = None if token is None else int(ids.searchsorted(token))
    return int(ids[choose("index", len(ids), index)])


def _odds_model(k: int):
    import numpy

    weight = IN_WEIGHT[k + K_MAX]
    return categorical(numpy.array([weight, 2**24 - weight], dtype=numpy.float64) / 2**24)


class _BandCoding:
    """The adaptive state both sides of scheme 2 keep per chunk: the mode counts (the grids
    of BAND_SHIFTS, then the raw id) and each deep edge's flag counts."""

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


class BandEncoder(_BandCoding):
    """Scheme 2's encoder for one chunk (the decoder mirrors it in :class:`BandDecoder`);
    kind memory-int-lm codes its corrected tokens with it too."""

    def __init__(self, token_ids, stats: Stats | None, coder=None):
        """Into a new range encoder, or into ``coder`` after what it holds (kind memory-int-lm)."""
        import constriction

        super().__init__()
        self.tokens, self.stats = list(token_ids), stats
        self.coder = coder if coder is not None else constriction.stream.queue.RangeEncoder()

    def __call__(self, position: int, row) -> int:
        return self.encode(self.tokens[position], row)

    def encode(self, token: int, row) -> int:
        """Code ``token`` under ``row``, the position's (V,) float32 logits; returns it."""
        import math

        import constriction
        import numpy

        stats = self.stats
        mode, symbols = len(BAND_SHIFTS), []
        for m, shift in enumerate(BAND_SHIFTS):
            symbols = []
            if _walk(_Bands(row, shift), lambda what, arg, truth: symbols.append((what, arg, truth)) or truth,
                     token) is not None:
                mode = m
                break
        bits = -math.log2(self.counts[mode] / sum(self.counts))
        self.coder.encode(mode, counts_model(self.counts))
        self.counts[mode] += MODE_STEP
        if stats is not None:
            stats.tokens += 1
            stats.mode_bits += bits
            shifted = row.astype("float64") - row.max()
            stats.ideal_bits -= (shifted[token] - math.log(numpy.exp(shifted).sum())) / math.log(2)
        if mode == len(BAND_SHIFTS):
            self.coder.encode(token, constriction.stream.model.Uniform(row.shape[-1]))
            symbols = []
            if stats is not None:
                stats.escape_bits += math.log2(row.shape[-1])
                stats.outcomes[3] += 1
        for what, arg, truth in symbols:
            model = self.model(what, arg)
            if stats is not None:
                cost = _cost(what, arg, truth, self)
                if what == "flag":
                    stats.escape_bits += cost
                    stats.outcomes[2] += truth
                else:
                    stats.quantised_bits += cost
            self.coder.encode(truth, model)
            self.update(what, arg, truth)
        if stats is not None and mode < len(BAND_SHIFTS):
            stats.outcomes[min(mode, 1)] += 1
        return token

    def coded(self) -> bytes:
        return pack_words(self.coder.get_compressed())


def _cost(what: str, arg: int, symbol: int, state: _BandCoding) -> float:
    import math

    if what == "flag":
        return -math.log2(state.flags[arg][symbol] / sum(state.flags[arg]))
    if what == "odds":
        weight = IN_WEIGHT[arg + K_MAX]
        return -math.log2((weight if symbol == 0 else 2**24 - weight) / 2**24)
    return math.log2(arg)


class BandDecoder(_RowDecoder, _BandCoding):
    """Scheme 2's decoder for one chunk: ``decoder(position, row)`` is the token at that
    position from its (V,) float32 logits (0 once ``failed``)."""

    def __init__(self, coded: bytes, coder=None):
        _RowDecoder.__init__(self, coded, coder)
        _BandCoding.__init__(self)

    def _choose(self, what: str, arg: int, truth) -> int:
        symbol = int(self.coder.decode(self.model(what, arg)))
        self.update(what, arg, symbol)
        return symbol

    def _grid(self, row, mode: int) -> int:
        return _walk(_Bands(row, BAND_SHIFTS[mode]), self._choose)


def run_batch(model, n_tokens: list, pick, *, on_step=None) -> list:
    """The one lm computation, shared by encode and decode: B rows, step ``s`` runs
    exactly the rows whose ``n_tokens`` exceed ``s``, in their order
    (``llmzip.decode.batch_schedule``), one token per row with the KV cache; step 0 feeds
    BOS. ``pick[i](s, logits)`` (float32 numpy row) returns row i's token at step s.
    Returns each row's tokens."""
    import torch

    from llmzip.decode import batch_schedule

    schedule = batch_schedule(n_tokens)
    device = model.get_input_embeddings().weight.device
    ids: list = [[] for _ in n_tokens]
    rows = list(range(len(n_tokens)))
    next_ids = torch.full((len(rows), 1), model.config.bos_token_id, dtype=torch.long, device=device)  # (B, 1)
    cache = None
    model.eval()
    with torch.no_grad():
        for step in range(len(schedule)):
            if step:
                keep = [j for j, i in enumerate(rows) if n_tokens[i] > step]
                if len(keep) < len(rows):
                    cache.batch_select_indices(torch.tensor(keep, device=device))
                    rows = [rows[j] for j in keep]
                next_ids = torch.tensor([[ids[i][-1]] for i in rows], dtype=torch.long, device=device)  # (b, 1)
            kwargs = {} if cache is None else {"cache": cache}
            out = model(input_ids=next_ids, use_cache=True, **kwargs)  # logits (b, 1, V)
            cache = out.cache
            logits = out.logits[:, -1].float().cpu().numpy()  # (b, V)
            for j, i in enumerate(rows):
                ids[i].append(pick[i](step, logits[j]))
            if on_step is not None:
                on_step(len(rows))
    return ids


def decode_batch(model, chunks: list, *, on_step=None, scheme: int = 2) -> list:
    """Decode a group of lm chunks as one batch (:func:`run_batch`); None for a row whose
    bits are not a valid code."""
    decoders = [(_Decoder if scheme == 1 else BandDecoder)(chunk.coded) for chunk in chunks]
    ids = run_batch(model, [chunk.n_tokens for chunk in chunks], decoders, on_step=on_step)
    return [None if d.failed else row for d, row in zip(decoders, ids)]


def encode_batch(model, token_lists: list, params: Params | None = None, stats: Stats | None = None,
                 *, on_step=None, scheme: int = 2) -> list:
    """The coded bytes of a group of chunks, from the very computation the decoder runs
    (:func:`run_batch`, teacher-forced), so on one machine the decoder sees the encoder's
    logits bit for bit; elsewhere they drift by less than the tolerance."""
    encoders = [_Encoder(ids, params or Params(), stats) if scheme == 1 else BandEncoder(ids, stats)
                for ids in token_lists]
    run_batch(model, [len(ids) for ids in token_lists], encoders, on_step=on_step)
    return [encoder.coded() for encoder in encoders]


def _text_bytes(loaded, token_ids) -> bytes:
    from llmzip.chunking import detokenize, text_bytes

    return text_bytes(detokenize(loaded.tokenizer, token_ids))


KIND = LmKind()
