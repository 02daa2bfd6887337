"""Kind ``lm`` (code 3): a chunk's tokens entropy-coded under the model's next-token
distribution, drift-robust by construction.

Each chunk is coded alone: the model sees BOS and the chunk's own earlier tokens, so lm
chunks decode in batches, one step per token for all chunks of a group (like memory
chunks), in the decode loop memory vectors use (:func:`llmzip.decode.run_rows`). Scheme 2
(:func:`_walk`), which the writer uses, codes a token as "in this band / deeper" decisions
with the quantised log-odds of the two sides' softmax masses, then a uniform index in the
band, so only the edges on the token's path must lie ``TOLERANCE`` away from a grid line:
a decoder whose logits drift by less builds the same decisions bit for bit. Scheme 1
(format 2.1 as first written) is still read (:mod:`llmzip.kinds.legacy.lm_scheme1`); the
recorded settings select the scheme (:func:`scheme_of`). format/CODEC.md, "Kind lm", is the
contract; ``constriction``'s range coder does the arithmetic.

The record's fields: varint n_tokens, then the coder's compressed 32-bit words as
little-endian bytes with up to 3 trailing zero bytes of the last word dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmzip import wire
from llmzip.errors import FormatError
from llmzip.kinds.base import Kind, Restored, WireContext, check_token_counts, decode_group, restored_text
from llmzip.kinds.legacy import lm_scheme1
from llmzip.kinds.rangecode import (DELTA, MODE_START, MODE_STEP, TOLERANCE, RowDecoder, categorical, counts_model,
                                    lm_settings, pack_words)

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
SETTINGS = lm_settings(DELTA, EDGES[-1], len(EDGES), TOLERANCE)  # what new lm chunks are coded with
SCHEMES = {1: lm_scheme1.SETTINGS, 2: SETTINGS}  # the recorded settings select the scheme
LM_CHUNK_TOKENS = 1024  # chunk budget of --codec lm by default (BENCHMARKS.md, "LM coding")


@dataclass(frozen=True)
class LmChunk:
    """A chunk stored as its tokens' range-coded bits."""

    coded: bytes  # the range coder's words, little-endian, last word's trailing zeros dropped
    n_tokens: int
    length: int  # bytes of the chunk's text
    check: int  # wire.chunk_check() of the chunk's bytes


class LmKind(Kind):
    name = "lm"
    code = 3
    minor = 1  # defined in format 2.1
    chunk_type = LmChunk
    needs_model = True
    written = True  # scheme 2 (scheme 1 is read only)

    # ---------------------------------------------------------------- wire half

    def encode_fields(self, chunk: LmChunk, ctx: WireContext) -> bytes:
        self._check(chunk, "lm chunk")
        return wire.varint(chunk.n_tokens) + chunk.coded

    def decode_fields(self, fields, length, check, ctx, where) -> LmChunk:
        if tuple(ctx.version) < (2, self.minor):
            raise FormatError(f"{where}: kind lm (3) is not defined in format {ctx.version[0]}.{ctx.version[1]}")
        n_tokens, head = wire.read_varint(fields, 0, f"{where}: n_tokens")
        chunk = LmChunk(bytes(fields[head:]), n_tokens, length, check)
        self._check(chunk, where)
        return chunk

    def _check(self, chunk: LmChunk, where: str) -> None:
        wire.check_int(chunk.n_tokens, f"{where}: n_tokens", 1, wire.MAX_TOKENS_PER_CHUNK)
        if not isinstance(chunk.coded, bytes):
            raise FormatError(f"{where}: coded is {type(chunk.coded).__name__}, not bytes")

    def stored_bytes(self, chunk: LmChunk) -> int:
        return len(chunk.coded)

    def tokens(self, chunk: LmChunk) -> int:
        return chunk.n_tokens

    # ---------------------------------------------------------------- model half

    def check_before_model(self, items, archive) -> None:
        scheme_of(archive.header.settings)
        check_token_counts(items)

    def restore(self, items, loaded, archive, on_done=None):
        group = decode_group(archive)
        chunks = [chunk for _, chunk in items]
        token_lists = self.decode(loaded, chunks, group, on_done=on_done, scheme=scheme_of(archive.header.settings))
        for (index, _), ids in zip(items, token_lists):
            yield Restored(index, b"" if ids is None else restored_text(loaded, ids))

    def decode(self, loaded, chunks: list, group: int, on_done=None, scheme: int = 2) -> list:
        """The decode computation of CODEC.md: consecutive groups of ``group`` chunks, each
        decoded as one batch. Returns each chunk's token ids, or None where the coded bits
        are not a valid code (the codec's checks then refuse the chunk)."""
        results = []
        for start in range(0, len(chunks), group):
            results += decode_batch(loaded.model, chunks[start : start + group], on_step=on_done, scheme=scheme)
        return results

    def encode(self, loaded, token_lists, group: int, stats: Stats | None = None, on_done=None) -> list:
        """The coded bytes (scheme 2) of each token list, in consecutive groups of ``group``
        run as the decoder runs them; the codec verifies them with :meth:`decode` before
        storing."""
        coded = []
        for start in range(0, len(token_lists), group):
            coded += encode_batch(loaded.model, token_lists[start : start + group], stats, on_step=on_done)
        return coded


def scheme_of(settings: dict) -> int:
    """The coding scheme an archive's recorded settings select (CODEC.md, "Kind lm")."""
    recorded = {key: settings.get(key) for key in SETTINGS}
    for scheme, values in SCHEMES.items():
        if recorded == values:
            return scheme
    raise FormatError(f"lm chunks coded with settings {recorded}; this llmzip decodes {list(SCHEMES.values())}")


# ------------------------------------------------------------------------- the computation


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


class BandDecoder(RowDecoder, _BandCoding):
    """Scheme 2's decoder for one chunk: ``decoder(position, row)`` is the token at that
    position from its (V,) float32 logits (0 once ``failed``)."""

    def __init__(self, coded: bytes, coder=None):
        RowDecoder.__init__(self, coded, coder)
        _BandCoding.__init__(self)

    def _choose(self, what: str, arg: int, truth) -> int:
        symbol = int(self.coder.decode(self.model(what, arg)))
        self.update(what, arg, symbol)
        return symbol

    def _grid(self, row, mode: int) -> int:
        return _walk(_Bands(row, BAND_SHIFTS[mode]), self._choose)


def run_batch(model, n_tokens: list, pick, *, on_step=None) -> list:
    """The one lm computation, shared by encode and decode: B rows through
    :func:`llmzip.decode.run_rows` (step ``s`` runs exactly the rows whose ``n_tokens``
    exceed ``s``, in their order, one token per row with the KV cache), the first pass
    feeding BOS. ``pick[i](s, logits)`` (float32 numpy row) returns row i's token at step
    s. Returns each row's tokens."""
    import torch

    from llmzip.decode import run_rows

    device = model.get_input_embeddings().weight.device
    ids: list = [[] for _ in n_tokens]

    def choose(step: int, rows, logits):
        logits = logits.cpu().numpy()  # (b, V)
        chosen = [pick[i](step, logits[j]) for j, i in enumerate(rows.tolist())]
        for i, token in zip(rows.tolist(), chosen):
            ids[i].append(token)
        return torch.tensor(chosen, dtype=torch.long, device=device)  # (b,)

    bos = torch.full((len(n_tokens), 1), model.config.bos_token_id, dtype=torch.long, device=device)  # (B, 1)
    run_rows(model, {"input_ids": bos}, n_tokens, choose, on_step=on_step)
    return ids


def decode_batch(model, chunks: list, *, on_step=None, scheme: int = 2) -> list:
    """Decode a group of lm chunks as one batch (:func:`run_batch`); None for a row whose
    bits are not a valid code. ``scheme`` as :func:`scheme_of` reads it from the archive."""
    decoders = [DECODERS[scheme](chunk.coded) for chunk in chunks]
    ids = run_batch(model, [chunk.n_tokens for chunk in chunks], decoders, on_step=on_step)
    return [None if d.failed else row for d, row in zip(decoders, ids)]


def encode_batch(model, token_lists: list, stats: Stats | None = None, *, on_step=None) -> list:
    """The coded bytes (scheme 2) of a group of chunks, from the very computation the
    decoder runs (:func:`run_batch`, teacher-forced), so on one machine the decoder sees the
    encoder's logits bit for bit; elsewhere they drift by less than the tolerance."""
    encoders = [BandEncoder(ids, stats) for ids in token_lists]
    run_batch(model, [len(ids) for ids in token_lists], encoders, on_step=on_step)
    return [encoder.coded() for encoder in encoders]


DECODERS = {1: lm_scheme1.Decoder, 2: BandDecoder}  # a chunk's decoder by scheme
KIND = LmKind()
