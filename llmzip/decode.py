"""The one canonical greedy decoder: memory vectors + token counts -> token ids.

Compress-time verification and extract both call :func:`decode_batch` (or :func:`decode`,
its batch of one), so a chunk is accepted only if the exact computation that will later
restore it has already restored it once.

Prompt layout (:data:`TEMPLATE`): ``"bos+mem"``. The model sees its BOS embedding, then
the memory vector, then the tokens generated so far; the logits at the memory vector's
position predict the first token. Keeping BOS gives the model the attention sink it was
trained with, so the memory vector does not have to play that role as well: with the
vector alone, training took 2-2.5x more steps (BENCHMARKS.md, "What we tried", attempt 7).

Fixed numerics, in the order they matter:

* the model's own dtype (``load_model`` loads fp32, and the archive records it) and
  attention implementation (pinned by ``load_model``, recorded in the archive);
* the batch: the prompt of every row in one forward pass, then one token per step with
  the KV cache, each row leaving the batch after its last token (the drop rule in
  :func:`decode_batch`, :func:`batch_schedule`), so the matmul shapes are a pure function
  of the token counts in their given order. The cache
  changes the matmul shapes compared with recomputing the whole sequence, and the batch
  size may change how a kernel blocks a matmul, so logits differ in the last bits between
  batch compositions; training already differs from decoding (batched, teacher-forced, a
  candidate softmax, possibly bf16), which is why every position must win by a margin and
  why the stored vector is re-checked here. With the cache a chunk of ``n`` tokens costs
  ``n`` single-token steps instead of ``n`` growing full passes (2.8x faster for 23
  tokens on Gemma 3 270M; BENCHMARKS.md); with a batch, each step's weight reads serve
  every row (BENCHMARKS.md, "Extract throughput: batched decoding");
* the model's linears in the order ``load_model`` sets (weight-major on the CPU,
  :func:`llmzip.model.weight_major_linears`), and the cache appending in place
  (:mod:`llmzip.kvcache`, the same values as transformers' own cache). Archives verified
  before either changed (llmzip 0.1.0 to this one) decode by their margins and tolerances:
  the orders differ by ~3e-6 on a logit;
* the vectors are used exactly as stored (fp16, kind ``memory``) or as rebuilt from their
  stored form (float32, kind ``memory-int``), converted to the model's dtype, which is
  exact for fp16 or fp32 -> fp32.

No EOS handling: the archive stores each chunk's token count, so decoding cannot run away.
"""

import operator
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from llmzip.corrections import Corrections
from llmzip.errors import FormatError
from llmzip.kvcache import append_cache
from llmzip.wire import TEMPLATE  # noqa: F401 - the prompt this module builds

# The model and training dtypes by the names archives (model identity "t") and settings
# (TrainConfig.train_dtype) record: a fixed list, never getattr on archive text.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a recorded dtype name; a ``FormatError`` for a name not in :data:`DTYPES`."""
    if name not in DTYPES:
        raise FormatError(f"archive names an unknown model dtype {name!r}")
    return DTYPES[name]


@dataclass(frozen=True)
class DecodeResult:
    token_ids: list[int]
    min_margin: float  # smallest top-1 minus top-2 logit gap over all generated positions


def prompt_embeddings(model, vectors: torch.Tensor) -> torch.Tensor:
    """The :data:`TEMPLATE` prefix for a batch of memory vectors: (B, d) -> (B, 2, d).

    Shared with training so that both build the prompt the same way. BOS goes through
    the model's embedding module (Gemma scales by sqrt(d) there); the memory vectors are
    already in that scaled space and bypass it.
    """
    embed = model.get_input_embeddings()
    bos = torch.tensor([model.config.bos_token_id], device=vectors.device)
    bos_embedding = embed(bos).to(vectors.dtype)  # (1, d)
    return torch.stack([bos_embedding.expand_as(vectors), vectors], dim=1)  # (B, 2, d)


def top2_gap(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 logit over the last dimension: (..., V) -> (...)."""
    top = logits.topk(2, dim=-1).values  # (..., 2)
    return top[..., 0] - top[..., 1]


def _pick_(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy token and top-1/top-2 gap of (b, V) logits, each (b,); **overwrites** the
    logits (the top-1 entry becomes -inf).

    The same values as ``logits.argmax(-1)`` (first maximum, documented for
    ``torch.max(dim)``) and :func:`top2_gap` (a repeated maximum gives a gap of 0), in
    two fast reductions: on this CPU ``argmax`` plus ``topk(2)`` over a (32, 262144) fp32
    tensor took 35 ms, ``max`` plus ``amax`` 6 ms (BENCHMARKS.md).
    """
    best, ids = logits.max(dim=-1)  # (b,), (b,)
    logits.scatter_(-1, ids[:, None], float("-inf"))
    return ids, best - logits.amax(dim=-1)


def batch_schedule(n_tokens: Sequence[int]) -> list[list[int]]:
    """The rows in the batch at each step of :func:`decode_batch`: ``schedule[s]`` lists,
    in the given order, the rows ``i`` with ``n_tokens[i] > s``, i.e. those whose token
    ``s`` is still to be generated. A pure function of ``n_tokens``, and so is every
    matmul shape of the decode."""
    return [[i for i, n in enumerate(n_tokens) if n > step] for step in range(max(n_tokens, default=0))]


def _check_batch(model, vectors: torch.Tensor, n_tokens: Sequence[int]) -> list[int]:
    """Validate the arguments of :func:`decode_batch`; returns ``n_tokens`` as ints."""
    d = model.get_input_embeddings().weight.shape[1]
    if not isinstance(vectors, torch.Tensor) or vectors.dtype not in (torch.float16, torch.float32) or vectors.dim() != 2:
        got = f"{tuple(vectors.shape)} {vectors.dtype}" if isinstance(vectors, torch.Tensor) else type(vectors).__name__
        raise ValueError(f"expected a (B, d) float16 or float32 tensor of stored vectors, got {got}")
    if vectors.shape[0] < 1 or vectors.shape[1] != d:
        raise ValueError(f"expected (B >= 1, d = {d}) vectors, got {tuple(vectors.shape)}")
    try:
        counts = [operator.index(n) for n in n_tokens]
    except TypeError:
        raise ValueError(f"n_tokens must be a sequence of ints, got {n_tokens!r}") from None
    if len(counts) != vectors.shape[0]:
        raise ValueError(f"{vectors.shape[0]} vectors but {len(counts)} token counts")
    if min(counts) < 1:
        raise ValueError(f"every n_tokens must be at least 1, got {min(counts)}")
    return counts


@torch.no_grad()
def decode_batch(
    model,
    vectors: torch.Tensor,
    n_tokens: Sequence[int],
    *,
    forced: Sequence[Corrections | Sequence[tuple[int, int]]] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[DecodeResult]:
    """Greedily generate ``n_tokens[i]`` tokens from each stored memory vector ``vectors[i]``.

    ``vectors`` is the (B, d) float16 or float32 tensor of the prompt vectors (see the
    module docstring), ``n_tokens`` the B token
    counts. Returns one :class:`DecodeResult` per row, in the given order.

    All rows share the 2-position :data:`TEMPLATE` prompt, so they stay position-aligned
    and need no padding or attention mask. The prompt goes through the model in one pass
    for all B rows, then one token per step with the KV cache. **Drop rule:** a row leaves
    the batch right after its last token is chosen: step ``s`` (which chooses token ``s``)
    runs on exactly the rows with ``n_tokens[i] > s``, in the given order
    (:func:`batch_schedule`); the KV cache is sliced to those rows, which are never
    reordered and never padded. So the computation,
    every matmul shape included, is a pure function of ``(vectors, n_tokens)`` in the
    given order, and compress-time verification reproduces extract's numerics exactly
    when it decodes the same rows in the same order.

    A row's result depends on its batch-mates only through floating-point rounding
    (kernels may block a (B, d) matmul differently for another B): the tokens agree
    wherever the margins do, which is what the recorded margin is for. ``decode_batch``
    runs all B rows at once; splitting a long list into batches is the caller's choice
    (with a 262k vocabulary the prompt pass's (B, 2, V) fp32 logits take 2 MB per row).
    ``forced[i]``, where given, is row i's :class:`Corrections` (or its ``(position,
    token)`` pairs): at those positions the row takes the token they give instead of the
    greedy choice (kinds ``memory-int-coded`` and ``memory-int-lm``); a forced position does
    not count towards the row's margin. Forcing changes no matmul shape, and a batch with
    no corrections is exactly the computation without ``forced``.
    ``on_step(rows)`` is called after each step with the number of tokens it chose (progress).
    """
    counts = _check_batch(model, vectors, n_tokens)
    model.eval()
    weight = model.get_input_embeddings().weight
    device, dtype = weight.device, weight.dtype
    n_rows, longest = len(counts), max(counts)
    ids = torch.zeros(n_rows, longest, dtype=torch.long, device=device)  # (B, T) filled per row up to n_tokens
    margins = torch.full((n_rows,), float("inf"), device=device)  # (B,) fp32
    corrections = _corrections(forced, counts, weight.shape[0])  # B Corrections, or None

    def choose(step: int, rows: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        taken = {} if corrections is None else _take(corrections, rows.tolist(), step, logits)  # before _pick_
        next_ids, gaps = _pick_(logits)  # (b,), (b,)
        for j, token in taken.items():
            next_ids[j], gaps[j] = token, float("inf")
        ids[rows, step] = next_ids
        margins[rows] = torch.minimum(margins[rows], gaps)
        return next_ids

    embeds = prompt_embeddings(model, vectors.to(device=device, dtype=dtype))  # (B, 2, d)
    # Logits for both prompt positions, although only the memory position's are used:
    # logits_to_keep=1 slices the hidden states to a non-contiguous (B, 1, d) view, which
    # torch multiplies with the (V, d) head as a bmm, 10x slower than the mm (2.5 s
    # against 0.25 s for B = 32 here), and it would change the B = 1 numerics.
    run_rows(model, {"inputs_embeds": embeds}, counts, choose, on_step=on_step)

    ids_list, margin_list = ids.tolist(), margins.tolist()
    return [DecodeResult(token_ids=ids_list[i][: counts[i]], min_margin=margin_list[i]) for i in range(n_rows)]


@torch.no_grad()
def run_rows(model, prompt: dict, n_tokens: Sequence[int],
             choose: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor], *,
             on_step: Callable[[int], None] | None = None) -> None:
    """The one KV-cache decode loop, shared by memory vectors (:func:`decode_batch`) and
    kind ``lm`` (:func:`llmzip.kinds.lm.run_batch`).

    ``model(**prompt)`` is the first pass, for all B rows (memory: the BOS embedding and
    the vectors; lm: BOS); each later pass feeds every row's last token with the KV cache.
    Step ``s`` runs exactly the rows ``batch_schedule(n_tokens)[s]``, in their order: a row
    leaves the batch right after its last token (the cache is sliced to the rows that
    stay, never reordered, never padded), so every matmul shape is a pure function of
    ``n_tokens`` in the given order. ``choose(s, rows, logits)`` gets the (b,) long tensor of
    the batch's original row indices and their (b, V) float32 logits at the last position
    (its to overwrite), and returns the (b,) long tokens they take, on the model's device.
    ``on_step(b)`` follows each step (progress)."""
    schedule = batch_schedule(n_tokens)
    if not schedule:
        return
    model.eval()
    device = model.get_input_embeddings().weight.device
    rows = torch.arange(len(n_tokens), device=device)  # (b,) original index of each row in the batch
    out = model(**prompt, cache=append_cache(model), use_cache=True)  # logits (B, P, V)
    for step in range(len(schedule)):
        next_ids = choose(step, rows, out.logits[:, -1].float())  # (b,); out.logits is not used again
        if on_step is not None:
            on_step(len(rows))
        if step + 1 == len(schedule):
            break
        if len(schedule[step + 1]) < len(schedule[step]):  # some rows are done: drop them
            keep = [j for j, i in enumerate(schedule[step]) if n_tokens[i] > step + 1]
            keep = torch.tensor(keep, device=device)  # (b',) positions in the current batch
            out.cache.batch_select_indices(keep)
            rows, next_ids = rows[keep], next_ids[keep]
        out = model(input_ids=next_ids[:, None], cache=out.cache, use_cache=True)  # (b, 1) -> logits (b, 1, V)


def _corrections(forced, counts: list[int], vocab_size: int) -> list[Corrections] | None:
    """One :class:`Corrections` per row, positions and stored tokens checked, or None when
    no row has one (the computation then stays that of a batch without corrections)."""
    if forced is None or not any(len(row.positions if isinstance(row, Corrections) else row) for row in forced):
        return None
    if len(forced) != len(counts):
        raise ValueError(f"{len(counts)} rows but {len(forced)} lists of forced tokens")
    rows = [row if isinstance(row, Corrections) else Corrections(row) for row in forced]
    for index, row in enumerate(rows):
        for position in row.positions:
            token = row.tokens.get(position, 0)
            if not 0 <= position < counts[index] or not 0 <= token < vocab_size:
                raise ValueError(f"row {index}: forced token {token} at position {position} is out of range")
    return rows


def _take(corrections: list[Corrections], rows: list[int], step: int, logits: torch.Tensor) -> dict[int, int]:
    """{batch position: token} for the rows corrected at ``step``, each token from its
    row's :meth:`Corrections.take` with that row's (V,) float32 logits."""
    taken = {}
    for j, row in enumerate(rows):
        if step in corrections[row].positions:
            token = corrections[row].take(step, logits[j].cpu().numpy())
            if not 0 <= token < logits.shape[-1]:
                raise ValueError(f"row {row}: corrected token {token} at position {step} is out of range")
            taken[j] = token
    return taken


def decode(model, vector: torch.Tensor, n_tokens: int, forced: Corrections | Sequence[tuple[int, int]] = ()) -> DecodeResult:
    """Greedily generate ``n_tokens`` tokens from one stored memory vector.

    ``vector`` is one (d,) row of what :func:`decode_batch` takes. Returns the token ids and
    the smallest top-1/top-2 logit gap seen, which tells how close the decode came to
    flipping a token under slightly different numerics; ``forced`` as one row of
    :func:`decode_batch`'s. The same computation as
    :func:`decode_batch` with a batch of one.
    """
    if not isinstance(vector, torch.Tensor) or vector.dim() != 1:
        got = f"{tuple(vector.shape)} {vector.dtype}" if isinstance(vector, torch.Tensor) else type(vector).__name__
        raise ValueError(f"expected a (d,) vector, got {got}")
    return decode_batch(model, vector[None], [n_tokens], forced=[forced])[0]  # (1, d)
