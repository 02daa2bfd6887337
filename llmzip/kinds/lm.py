"""Kind ``lm`` (code 3): a chunk's tokens entropy-coded under the model's next-token
distribution, drift-robust by construction.

Each chunk is coded alone: the model sees BOS and the chunk's own earlier tokens, so lm
chunks decode in batches, one step per token for all chunks of a group (like memory
chunks), in the decode loop memory vectors use (:func:`llmzip.decode.run_rows`). The
writer codes each chunk from one teacher-forced pass instead (:func:`encode_batch`), which
gives the decoder's logits up to a drift the tolerance covers. Scheme 2
(:mod:`llmzip.kinds.bands`), which the writer uses, codes a token as "in this band /
deeper" decisions with the quantised log-odds of the two sides' softmax masses, then a
uniform index in the band, so only the edges on the token's path must lie ``TOLERANCE``
away from a grid line: a decoder whose logits drift by less builds the same decisions bit
for bit. Scheme 1
(format 2.1 as first written) is still read (:mod:`llmzip.kinds.legacy.lm_scheme1`); the
recorded settings select the scheme (:func:`scheme_of`). format/CODEC.md, "Kind lm", is the
contract; ``constriction``'s range coder does the arithmetic.

The record's fields: varint n_tokens, then the coder's compressed 32-bit words as
little-endian bytes with up to 3 trailing zero bytes of the last word dropped.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from llmzip import wire
from llmzip.errors import FormatError
from llmzip.kinds.base import Kind, Restored, WireContext, check_token_counts, decode_group, map_calls, restored_text
from llmzip.kinds import bands
from llmzip.kinds.bands import EDGES, Stats
from llmzip.kinds.legacy import lm_scheme1
from llmzip.kinds.rangecode import DELTA, TOLERANCE, lm_settings

# The tolerance the writer keeps since it codes from a teacher-forced pass (scheme 3). On the
# default model the decoder's KV-cache steps differ from the pass by up to 6.6e-5, and by up
# to 7.4e-5 from a pass with AVX2-only kernels (BENCHMARKS.md, "LM coding: drift"): 2e-4 is
# 2.7x that.
# Each doubling costs bytes (on 16 KB of English: 1e-4 2,532 B, 2e-4 2,616, 5e-4 2,832).
WRITE_TOLERANCE = 2e-4
SCHEME_2 = lm_settings(DELTA, EDGES[-1], len(EDGES), TOLERANCE)
SETTINGS = lm_settings(DELTA, EDGES[-1], len(EDGES), WRITE_TOLERANCE)  # what new lm chunks are coded with
SCHEMES = {1: lm_scheme1.SETTINGS, 2: SCHEME_2, 3: SETTINGS}  # the recorded settings select the scheme
LM_CHUNK_TOKENS = 1024  # chunk budget of --codec lm by default (BENCHMARKS.md, "LM coding")
# The writer's coding is cut in parts of at least this many tokens, the unit of --workers
# (coding_parts): a default lm chunk is a part of its own, short chunks go several to one.
PART_TOKENS = 512


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
    written = True  # scheme 3 (schemes 1 and 2 are read only)

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

    def restore(self, items, loaded, archive, on_done=None, runner=None):
        group = decode_group(archive)
        chunks = [chunk for _, chunk in items]
        token_lists = self.decode(loaded, chunks, group, on_done=on_done, scheme=scheme_of(archive.header.settings),
                                  runner=runner)
        for (index, _), ids in zip(items, token_lists):
            yield Restored(index, b"" if ids is None else restored_text(loaded, ids))

    def decode(self, loaded, chunks: list, group: int, on_done=None, scheme: int = 3, runner=None) -> list:
        """The decode computation of CODEC.md: consecutive groups of ``group`` chunks, each
        decoded as one batch (:func:`decode_batch`), on ``runner``'s workers if given
        (:func:`map_calls`). Returns each chunk's token ids, or None where the coded bits
        are not a valid code (the codec's checks then refuse the chunk)."""
        calls = [(chunks[start : start + group], scheme) for start in range(0, len(chunks), group)]
        units = [sum(map(self.work, batch)) for batch, _ in calls]
        return [ids for results in map_calls(loaded, _decode_group, calls, units, on_done, runner) for ids in results]

    def encode(self, loaded, token_lists, stats: Stats | None = None, on_done=None, runner=None) -> list:
        """The coded bytes (scheme 3) of each token list (:func:`encode_batch`), in parts
        of consecutive lists (:func:`coding_parts`), on ``runner``'s workers if given
        (:func:`map_calls`). ``stats`` are gathered only without a runner."""
        parts = coding_parts(token_lists)
        calls = [(token_lists[part.start : part.stop], stats if runner is None else None) for part in parts]
        units = [sum(map(len, lists)) for lists, _ in calls]
        return [coded for results in map_calls(loaded, _encode_part, calls, units, on_done, runner) for coded in results]


def _decode_group(loaded, chunks: list, scheme: int, on_done=None) -> list:
    return decode_batch(loaded.model, chunks, on_step=on_done, scheme=scheme)


def _encode_part(loaded, token_lists: list, stats: Stats | None, on_done=None) -> list:
    return encode_batch(loaded.model, token_lists, stats, on_step=on_done)


def coding_parts(token_lists: list, tokens: int = PART_TOKENS) -> list[range]:
    """The writer's lm coding cut into parts of consecutive lists of at least ``tokens``
    tokens (the last may be smaller), the unit of work of ``--workers``. A part never
    splits a run of lists of equal length, which share one forward pass
    (:func:`teacher_forced`): coding the parts one by one gives the bits of coding all
    lists at once."""
    parts, start, size = [], 0, 0
    for i, ids in enumerate(token_lists):
        size += len(ids)
        run_ends = i + 1 == len(token_lists) or len(token_lists[i + 1]) != len(ids)
        if run_ends and size >= tokens:
            parts.append(range(start, i + 1))
            start, size = i + 1, 0
    if start < len(token_lists):
        parts.append(range(start, len(token_lists)))
    return parts


def scheme_of(settings: dict) -> int:
    """The coding scheme an archive's recorded settings select (CODEC.md, "Kind lm")."""
    recorded = {key: settings.get(key) for key in SETTINGS}
    for scheme, values in SCHEMES.items():
        if recorded == values:
            return scheme
    raise FormatError(f"lm chunks coded with settings {recorded}; this llmzip decodes {list(SCHEMES.values())}")


# ------------------------------------------------------------------------- the computation

HEAD_POSITIONS = 128  # positions the writer's pass runs the head on at once: the (262,144 x 640) head is read once per block (128 MB of logits)
TABLE_POSITIONS = 8  # positions whose band tables the writer builds at once: small blocks stay in cache (7 against 18 ms a position at 32 here)


def run_batch(model, n_tokens: list, pick, *, on_step=None) -> list:
    """The decoder's computation: B rows through :func:`llmzip.decode.run_rows` (step ``s``
    runs exactly the rows whose ``n_tokens`` exceed ``s``, in their order, one token per
    row with the KV cache), the first pass feeding BOS. ``pick(s, rows, logits)`` gets the
    step's original row indices and their (b, V) float32 logits and returns their tokens.
    Returns each row's tokens."""
    import torch

    from llmzip.decode import run_rows

    device = model.get_input_embeddings().weight.device
    ids: list = [[] for _ in n_tokens]

    def choose(step: int, rows, logits):
        rows = rows.tolist()
        chosen = pick(step, rows, logits)
        for i, token in zip(rows, chosen):
            ids[i].append(token)
        return torch.tensor(chosen, dtype=torch.long, device=device)  # (b,)

    bos = torch.full((len(n_tokens), 1), model.config.bos_token_id, dtype=torch.long, device=device)  # (B, 1)
    run_rows(model, {"input_ids": bos}, n_tokens, choose, on_step=on_step)
    return ids


def per_row(pickers: list):
    """A :func:`run_batch` pick made of one picker per row, ``pickers[i](s, row)`` with the
    row's (V,) float32 logits in numpy (scheme 1's decoder; the fixtures' scheme 1 encoder)."""

    def pick(step: int, rows: list, logits) -> list:
        logits = logits.cpu().numpy()  # (b, V)
        return [pickers[i](step, logits[j]) for j, i in enumerate(rows)]

    return pick


def decode_batch(model, chunks: list, *, on_step=None, scheme: int = 3) -> list:
    """Decode a group of lm chunks as one batch (:func:`run_batch`); None for a row whose
    bits are not a valid code. ``scheme`` as :func:`scheme_of` reads it from the archive."""
    if scheme == 1:
        decoders = [lm_scheme1.Decoder(chunk.coded) for chunk in chunks]
        pick = per_row(decoders)
    else:
        decoders = [bands.BandDecoder(chunk.coded, fast=scheme == 3) for chunk in chunks]

        def pick(step: int, rows: list, logits) -> list:
            return bands.decode_positions([decoders[i] for i in rows], logits)

    ids = run_batch(model, [chunk.n_tokens for chunk in chunks], pick, on_step=on_step)
    return [None if d.failed else row for d, row in zip(decoders, ids)]


def teacher_forced(model, token_lists: list, block: int = HEAD_POSITIONS):
    """The logits the model gives each token of each list, with BOS and the list's earlier
    tokens as context (what the decoder's steps compute, up to the drift the tolerance
    covers), from one forward pass per list (consecutive lists of equal length share
    one): yields ``(owners, logits)``, ``owners`` the (list, position) of each row of the
    (P, V) float32 logits, every list's positions in order. The head runs on ``block``
    positions at a time, so the (n, V) logits of a long list never exist at once."""
    import torch

    device = model.get_input_embeddings().weight.device
    head, cap = model.get_output_embeddings(), model.config.final_logit_softcapping
    bos = model.config.bos_token_id
    for n, run in itertools.groupby(range(len(token_lists)), key=lambda i: len(token_lists[i])):
        run = list(run)  # consecutive lists of n tokens
        rows = [[bos] + list(token_lists[i][:-1]) for i in run]
        with torch.no_grad():
            hidden = model.base_model(input_ids=torch.tensor(rows, device=device), use_cache=False).last_hidden_state
            flat = hidden.reshape(-1, hidden.shape[-1])  # (B * n, d): each list's positions in order
            owners = [(i, s) for i in run for s in range(n)]
            for first in range(0, len(owners), block):
                logits = head(flat[first : first + block])  # (P, V) as Gemma's forward computes them
                if cap is not None:
                    logits = torch.tanh(logits / cap) * cap
                yield owners[first : first + block], logits.float()


def encode_batch(model, token_lists: list, stats: Stats | None = None, *, on_step=None) -> list:
    """The coded bytes of each token list (scheme 3), from one teacher-forced pass per list
    (:func:`teacher_forced`): every decision on a token's path keeps the tolerance from
    its grid line under these logits, so a decoder whose logits drift by less (its KV-cache
    steps, another machine's kernels: BENCHMARKS.md, "LM coding: drift") decodes it."""
    encoders = [bands.BandEncoder(stats, tolerance=WRITE_TOLERANCE, fast=True) for _ in token_lists]
    for owners, logits in teacher_forced(model, token_lists):
        for first in range(0, len(owners), TABLE_POSITIONS):
            block = owners[first : first + TABLE_POSITIONS]
            bands.code_positions([encoders[i] for i, _ in block], [token_lists[i][s] for i, s in block],
                                 logits[first : first + TABLE_POSITIONS])
            if on_step is not None:
                on_step(len(block))
    return [encoder.coded() for encoder in encoders]


KIND = LmKind()
