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

The record's fields: varint n_tokens, then the coder's compressed 32-bit words as
little-endian bytes with up to 3 trailing zero bytes of the last word dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmzip import container
from llmzip.errors import FormatError
from llmzip.kinds.base import Kind, Restored, WireContext, check_token_counts, decode_group

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

SETTINGS = {  # what lm chunks were coded with, recorded in the header's settings (CODEC.md)
    container.SETTINGS_KEYS[name]: value
    for name, value in (("lm_delta", DELTA), ("lm_levels", R_LEVELS), ("lm_band_levels", BAND_LEVELS),
                        ("lm_tolerance", TOLERANCE))
}
LM_CHUNK_TOKENS = 256  # chunk budget of --codec lm by default (BENCHMARKS.md, "LM coding")


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
        settings = archive.header.settings
        recorded = {key: settings.get(key) for key in SETTINGS}
        if recorded != SETTINGS:
            raise FormatError(f"lm chunks coded with settings {recorded}; this llmzip decodes {SETTINGS}")
        check_token_counts(items)

    def restore(self, items, loaded, archive, on_done=None):
        from llmzip.kinds.memory import DEFAULT_DECODE_GROUP, MAX_DECODE_GROUP

        group = decode_group(archive, DEFAULT_DECODE_GROUP, MAX_DECODE_GROUP)
        chunks = [chunk for _, chunk in items]
        token_lists = self.decode(loaded, chunks, group, on_done=on_done)
        for (index, _), ids in zip(items, token_lists):
            yield Restored(index, b"" if ids is None else _text_bytes(loaded, ids))

    def decode(self, loaded, chunks: list, group: int, on_done=None) -> list:
        """The decode computation of CODEC.md: consecutive groups of ``group`` chunks, each
        decoded as one batch. Returns each chunk's token ids, or None where the coded bits
        are not a valid code (the codec's checks then refuse the chunk)."""
        results = []
        for start in range(0, len(chunks), group):
            results += decode_batch(loaded.model, chunks[start : start + group], on_step=on_done)
        return results

    def encode(self, loaded, token_lists, group: int, params: Params | None = None, stats: Stats | None = None,
               on_done=None) -> list:
        """The coded bytes of each token list, in consecutive groups of ``group`` run as
        the decoder runs them; the codec verifies them with :meth:`decode` before storing."""
        coded = []
        for start in range(0, len(token_lists), group):
            coded += encode_batch(loaded.model, token_lists[start : start + group], params, stats, on_step=on_done)
        return coded


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


def _categorical(probs):
    import constriction

    return constriction.stream.model.Categorical(probs, perfect=False)


def _mode_model(counts):
    import numpy

    counts = numpy.asarray(counts, dtype=numpy.float64)
    return _categorical(counts / counts.sum())


def _pack_words(words) -> bytes:
    raw = words.astype("<u4").tobytes()
    keep = len(raw)
    while keep > len(raw) - 3 and keep > 1 and raw[keep - 1] == 0:
        keep -= 1
    return raw[:keep]


def _unpack_words(coded: bytes):
    import numpy

    padded = coded + b"\0" * (-len(coded) % 4)
    return numpy.frombuffer(padded, dtype="<u4").astype(numpy.uint32)


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
        self.coder.encode(mode, _mode_model(self.counts))
        self.counts[mode] += MODE_STEP
        escaped = mode == 2 or symbol == len(probs) - 1
        if mode != 2:
            self.coder.encode(symbol, _categorical(probs))
            if stats is not None:
                stats.quantised_bits -= math.log2(probs[symbol])
        if escaped and mode != 2:  # the band, or the raw id
            ids, safe = band(row, SHIFTS[mode], self.params)
            index = int(numpy.searchsorted(ids, token))
            in_band = safe and index < len(ids) and ids[index] == token
            flag = 0 if in_band else 1
            if stats is not None:
                stats.escape_bits -= math.log2(self.band_counts[flag] / sum(self.band_counts))
            self.coder.encode(flag, _mode_model(self.band_counts))
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
        return _pack_words(self.coder.get_compressed())


class _Decoder:
    """Decodes one chunk's tokens; a corrupt code marks it failed (its checksum then refuses it)."""

    def __init__(self, coded: bytes):
        import constriction

        self.coder = constriction.stream.queue.RangeDecoder(_unpack_words(coded))
        self.counts = list(MODE_START)
        self.band_counts = list(BAND_START)
        self.failed = False

    def __call__(self, position: int, row) -> int:
        import constriction

        if self.failed:
            return 0
        try:
            mode = int(self.coder.decode(_mode_model(self.counts)))
            self.counts[mode] += MODE_STEP
            if mode != 2:
                candidates, probs, _ = distribution(row, SHIFTS[mode], Params())
                symbol = int(self.coder.decode(_categorical(probs)))
                if symbol < len(candidates):
                    return int(candidates[symbol])
                flag = int(self.coder.decode(_mode_model(self.band_counts)))
                self.band_counts[flag] += 1
                if flag == 0:
                    ids, _ = band(row, SHIFTS[mode], Params())
                    return int(ids[int(self.coder.decode(constriction.stream.model.Uniform(len(ids))))])
            token = int(self.coder.decode(constriction.stream.model.Uniform(row.shape[-1])))
            if not 0 <= token < row.shape[-1]:
                raise ValueError(token)
            return token
        except Exception:  # noqa: BLE001 - constriction raises on a corrupt or exhausted code
            self.failed = True
            return 0


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


def decode_batch(model, chunks: list, *, on_step=None) -> list:
    """Decode a group of lm chunks as one batch (:func:`run_batch`); None for a row whose
    bits are not a valid code."""
    decoders = [_Decoder(chunk.coded) for chunk in chunks]
    ids = run_batch(model, [chunk.n_tokens for chunk in chunks], decoders, on_step=on_step)
    return [None if d.failed else row for d, row in zip(decoders, ids)]


def encode_batch(model, token_lists: list, params: Params | None = None, stats: Stats | None = None,
                 *, on_step=None) -> list:
    """The coded bytes of a group of chunks, from the very computation the decoder runs
    (:func:`run_batch`, teacher-forced), so on one machine the decoder sees the encoder's
    logits bit for bit; elsewhere they drift by less than the tolerance."""
    encoders = [_Encoder(ids, params or Params(), stats) for ids in token_lists]
    run_batch(model, [len(ids) for ids in token_lists], encoders, on_step=on_step)
    return [encoder.coded() for encoder in encoders]


def _text_bytes(loaded, token_ids) -> bytes:
    from llmzip.chunking import detokenize, text_bytes

    return text_bytes(detokenize(loaded.tokenizer, token_ids))


KIND = LmKind()
