"""Train one memory vector per chunk so that the frozen model regenerates the chunk.

For each chunk of token ids ``t_0 .. t_{n-1}`` we look for a vector ``m`` such that,
with the prompt of :func:`llmzip.decode.prompt_embeddings` (BOS, ``m``), greedy decoding
yields exactly those ids. Training is teacher-forced: one forward pass over
``[BOS, m, t_0 .. t_{n-2}]`` gives the logits for all ``n`` targets at once.

How the loop is organised, and why:

* **Continuous batching.** Up to ``batch_size`` chunks share each forward/backward pass
  (padded on the right). A chunk leaves the batch the moment it is done and the next
  waiting chunk takes its slot, so short or easy chunks never wait for hard ones.
  Right padding needs no attention mask: attention is causal, so a real position only
  sees earlier positions, which are all real.
* **Independent rows.** The loss is the *sum* of per-chunk mean cross-entropies, so each
  vector's gradient is what it would be alone; the optimiser is elementwise, so one
  chunk's optimiser state is just one row of a (B, p) tensor; each chunk has its own step
  count and its own stop. The start vector is seeded from the chunk's own ids.
  Batch-mates therefore change a result only through floating-point rounding of different
  matmul shapes, which the margin absorbs and verification checks. (Rounding is enough to
  move a chunk's step count, e.g. 43 or 96 steps for one Table 2 row: the path is
  chaotic, so step counts are compared over many chunks, never one.)
* **Rprop, or Adam, by what the form stores.** Each chunk has its own optimiser state.
  ``optimizer="adam"``: Adam (lr in embedding-RMS units, warmup). ``optimizer="rprop"``:
  iRprop- (Igel & Husken 2000), built for exact full-batch gradients like a chunk's: each
  coordinate moves by its own step size against its gradient's sign, the size x1.2 while
  the sign holds and x0.5 (and a skipped step) when it flips. On 64-token chunks Rprop's
  loss leads Adam's for the first ~100 steps and trails at the finish, where the last
  few positions clear the margin (BENCHMARKS.md, attempt 15). So the default
  (``optimizer=None``) follows the form: Rprop where the form stores corrections and
  ``corrections`` > 0, since those chunks stop early and leave their last short
  positions to the corrections (the codec's default form: 42-73 steps a 64-token chunk
  and ~22 % smaller records than Adam's, attempt 23); Adam where every position must
  clear the margin (full fp16 vectors: ~218 steps a 64-token chunk against ~300).
* **Stop on margin, keep what was measured.** A chunk stops when, at every position, the
  target's logit beats every other logit by at least ``margin``. The vector that produced
  those logits (before any further update) is the one verified and returned.
* **Corrections.** A form that stores corrections (kinds memory-int-coded, memory-int-lm) may stop with a
  few positions short of the margin, one more for every ``correction_steps`` steps trained
  (up to ``corrections``): those positions and their tokens are stored, and the decode
  takes them there. A chunk a vector almost holds then stops sooner, or at all. Such a
  chunk's loss weighs its ``corrections`` worst positions by ``correction_weight`` (0.1)
  instead of 1, so the vector is spent on the positions it can hold, not on tokens it will
  correct anyway: the slowest 64-token chunks of attempt 23 (260-500 steps) then stopped
  in 40-90 (BENCHMARKS.md, attempt 25).
* **Give up early.** Every ``giveup_window`` steps a chunk projects its loss (without the
  positions it may correct) to its budget along the power law it has been falling by; a chunk whose
  projection stays above ``giveup_loss`` (well above where chunks that fit stop) stops there, so text a vector cannot
  hold costs a few hundred steps, not the whole budget, before the caller stores it
  another way.
* **Stored forms.** What is optimised is a *form* of the vector (``form``): the full
  vector itself (:class:`llmzip.forms.Fp16Form`, the default) or k coefficients of
  an integer-coded vector, full or low rank (:class:`llmzip.forms.IntVectorForm`), each
  chunk's parameters a row of a (B, p) tensor.
* **Verify the stored form.** The stopped vector is rounded to its stored form (fp16) and decoded with
  :func:`llmzip.decode.decode_batch` on the caller's (fp32) model, forced at its corrections. It is accepted only if it
  reproduces the ids with a decode margin of at least ``verify_margin``. Stopped chunks
  give their slots to the next ones at once and are decoded together, a batch's worth at
  a time (or when nothing is left to train): one decode of many rows costs little more
  than one of a single row. A converged chunk
  that fails goes back into the batch with a doubled margin for at most ``extra_steps``
  more steps, then is verified once more and reported as it is.
* **Training dtype.** Optimisation may run on a copy of the model in ``train_dtype``;
  its logits only steer the search, acceptance is decided by the fp32 decode. The default
  ``"auto"`` (:func:`train_dtype_for`) takes bf16 where matmuls have it natively (CUDA
  with bf16; CPUs with AMX or AVX-512 BF16: 1.9x less wall time for the same steps,
  BENCHMARKS.md attempt 9) and fp32 elsewhere: on an AVX2-only CPU a bf16 vocabulary
  projection was 1.5x slower forward and ~130x slower backward than fp32.
* **A candidate softmax.** The output projection (262k rows for Gemma 3) was most of a
  full step. Between full-vocabulary checks each chunk's softmax runs over its targets
  and the ``candidates`` tokens that scored highest at each of its positions at the last
  check (see :meth:`MemoryTrainer._evaluate`); a chunk stops only on a full-vocabulary
  check. Hidden states at padding positions never reach the projection.

Whether a chunk's tokens decode back to its exact bytes is the caller's check (the codec
owns the tokenizer); this module works on ids only.
"""

import copy
import math
import time
import zlib
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F

from llmzip.config import TRAIN_DTYPES, TrainConfig
from llmzip.corrections import Corrections
from llmzip.decode import DTYPES, DecodeResult, decode_batch, prompt_embeddings
from llmzip.forms import Fp16Form

RPROP_SHRINK, RPROP_GROW = 0.5, 1.2  # iRprop-'s step-size factors on a sign flip / a kept sign (the usual values)
assert set(TRAIN_DTYPES) - {"auto"} <= set(DTYPES)


def fitted_start(weights_fingerprint: str) -> Optional[torch.Tensor]:
    """The start vector llmzip ships for the model with this (algorithm 2) weights
    fingerprint: the mean of memory vectors trained on held-out text by
    ``bench/fit_start_vector.py`` (``llmzip/starts/FINGERPRINT.safetensors``, tensor
    ``start``, (d,) float32), or None for models without one. memory-int vectors use it as
    their offset (:func:`llmzip.kinds.memory_int.offset_for`)."""
    from llmzip.kinds.memory_int import offset_for

    start = offset_for(weights_fingerprint)
    return None if start is None else torch.from_numpy(start.copy())


def configured_start(config: TrainConfig, weights_fingerprint: str) -> Optional[torch.Tensor]:
    """The start vector ``config.start`` names for the model with this weights fingerprint:
    :func:`fitted_start` for ``"fitted"``, None (seeded random starts) for ``"random"``."""
    return fitted_start(weights_fingerprint) if config.start == "fitted" else None


def train_dtype_for(name: str, device: torch.device) -> str:
    """The training dtype ``name`` means on ``device``: ``"auto"`` is ``"bfloat16"`` where
    matmuls run bf16 natively (CUDA with bf16, CPUs with AMX tiles or AVX-512 BF16) and
    ``"float32"`` elsewhere."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu":
        native = [getattr(torch.cpu, probe, lambda: False)() for probe in
                  ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]  # private probes: absent means no
        return "bfloat16" if any(native) else "float32"
    return "float32"


class _Evaluation(NamedTuple):
    """One teacher-forced pass over the active chunks: each field is (B,)."""

    losses: torch.Tensor  # per-chunk mean cross-entropy to differentiate (with grad)
    loss: torch.Tensor  # the same, or the full-vocabulary value where checked (no grad)
    accuracy: torch.Tensor  # teacher-forced argmax accuracy
    min_margin: torch.Tensor  # smallest target-vs-runner-up gap (negative where wrong)
    checked: torch.Tensor  # True where loss/accuracy/min_margin come from the full vocabulary
    settled_loss: torch.Tensor  # mean cross-entropy without the positions the chunk may correct (its worst ones), no grad


@dataclass
class ChunkResult:
    payload: bytes  # the stored form's bytes (the form's kind builds the record from them)
    vector: torch.Tensor  # (d,) on CPU: the vector extract prompts with, rebuilt from payload
    exact: bool  # decode() of this fp16 vector reproduced the tokens exactly
    accepted: bool  # exact, and decode_min_margin >= config.verify_margin: store it
    decode_min_margin: float  # from decode() of the stored vector
    steps: int  # optimiser steps taken
    seconds: float  # wall time from entering the batch to verified (batch-mates overlap)
    loss: float  # mean cross-entropy at the last evaluation
    token_accuracy: float  # teacher-forced argmax accuracy at the last evaluation
    train_min_margin: float  # smallest target-vs-runner-up gap at the last evaluation
    converged: bool  # reached the training margin (but at its corrected positions) within the step budget
    corrections: tuple = ()  # (position, token) pairs stored with the vector (forms that correct)
    gave_up: bool = False  # stopped before its budget: its loss curve said it would not fit


class _Stored(NamedTuple):
    """A chunk's vector in its stored form, as :meth:`MemoryTrainer._verify` decodes it."""

    payload: bytes  # the form's bytes (memory-int-lm: finished by the corrector after the decode)
    vector: torch.Tensor  # (d,) the vector extract prompts with
    corrections: tuple  # (position, token) pairs the record stores
    corrector: Corrections  # what the decode takes at those positions
    converged: bool  # reached the margin but at the positions it may correct


class _Training:
    """One chunk's optimisation state: its parameters, its own optimiser state and clock."""

    def __init__(self, index: int, ids: torch.Tensor, params: torch.Tensor, target_margin: float, budget: int):
        self.index = index
        self.ids = ids  # (T,)
        self.params = params  # (p,) float32: the form's parameters (the vector itself for Fp16Form)
        # Per-coordinate optimiser state, (p,) each: Adam's first and second moments, or
        # Rprop's last gradient (zero where it flipped sign) and current step sizes.
        self.state = (torch.zeros_like(params), torch.zeros_like(params))
        self.steps = 0
        self.target_margin = target_margin  # the gap this chunk trains for (doubled on a retry)
        self.budget = budget
        self.retried = False
        self.candidates = ids  # token ids kept in the restricted softmax; see _evaluate
        self.started = time.perf_counter()
        self.loss = self.token_accuracy = self.min_margin = float("nan")  # measured at the last evaluation
        self.gaps: list[float] = []  # per position, target-vs-runner-up gap at the last full-vocabulary check
        self.gave_up = False  # stopped early: its loss curve said it would not fit in its budget
        self.best_before = float("inf")  # lowest settled loss before the current give-up window
        self.best_in_window = float("inf")  # lowest settled loss in the current give-up window

    def hopeless(self, loss: float, window: int, stop_loss: float) -> bool:
        """Whether the curve of ``loss`` (this step's, without the positions the chunk may
        correct) says the chunk will not fit in its budget: at the end of every ``window``
        steps from the second on, the lowest loss of the last window is projected to the
        budget along the power law (loss ~ steps^-k) through it and the lowest loss before;
        hopeless if that stays above ``stop_loss``. A power law, not an exponential: loss
        curves slow down, and at the coded default a random-text chunk whose loss fell
        3.38 to 3.07 between steps 200 and 300 projected to 1.0 exponentially but 2.1 along
        the power law, and was still at 2.2 by step 500 (BENCHMARKS.md, attempt 19). Call
        once per step, with ``window`` > 0."""
        self.best_in_window = min(self.best_in_window, loss)
        if self.steps == 0 or self.steps % window:
            return False
        recent, before = self.best_in_window, self.best_before
        self.best_before, self.best_in_window = min(before, recent), float("inf")
        if self.steps < 2 * window or recent <= stop_loss:
            return False
        exponent = math.log(before / recent) / math.log(self.steps / (self.steps - window)) if recent < before else 0.0
        return recent * (self.steps / max(self.steps, self.budget)) ** exponent > stop_loss

    def short(self) -> list[int]:
        """Positions whose gap at the last full-vocabulary check is under the target margin."""
        return [position for position, gap in enumerate(self.gaps) if gap < self.target_margin]


class MemoryTrainer:
    """Holds the models and the configuration; :meth:`train` can be called many times."""

    def __init__(self, model, config: Optional[TrainConfig] = None, *, start: Optional[torch.Tensor] = None, form=None):
        self.model = model  # the decode model: never modified
        self.config = config if config is not None else TrainConfig()
        self.start = start  # (d,) float32: where every full vector starts (see _start), or None
        d = model.get_input_embeddings().weight.shape[1]
        self.form = form if form is not None else Fp16Form(d, start)  # what is optimised and stored
        if self.config.optimizer is None:  # Rprop where chunks may stop with corrections (see the module docstring)
            corrects = self.form.corrects and self.config.corrections > 0
            self.config = replace(self.config, optimizer="rprop" if corrects else "adam")
        weight = model.get_input_embeddings().weight
        device = torch.device(self.config.device) if self.config.device else weight.device
        self.train_dtype = train_dtype_for(self.config.train_dtype, device)
        dtype = DTYPES[self.train_dtype]
        if dtype == weight.dtype and device == weight.device:
            self.train_model = model
        else:
            self.train_model = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
            self.train_model.requires_grad_(False)
        self.device = device
        self.embed_rms = self._embedding_rms()
        self.final_softcap = getattr(model.config, "final_logit_softcapping", None)

    @torch.no_grad()
    def _embedding_rms(self) -> float:
        """RMS of one element of a real (scaled) input embedding, over a spread of the
        vocabulary: the scale for the start vectors and the learning rate."""
        n_vocab = self.train_model.get_input_embeddings().weight.shape[0]
        ids = torch.arange(0, n_vocab, max(1, n_vocab // 4096), device=self.device)
        embeddings = self.train_model.get_input_embeddings()(ids).float()  # (K, d)
        return embeddings.pow(2).mean().sqrt().item()

    def _start(self, index: int, ids: Sequence[int], margin: float, budget: Optional[int] = None) -> _Training:
        """A fresh chunk whose start depends only on the seed, its own ids and the form
        (:meth:`Fp16Form.initial`: a seeded random vector at the embeddings' scale, or the
        fitted start plus ``start_noise`` times it, so that equal chunks still start apart
        from other chunks' paths). Gemma 3 270M's fitted start cut the steps on the Table 2
        rows 2.2x, all still exact (BENCHMARKS.md, attempt 10)."""
        ids_tensor = torch.tensor(list(ids), dtype=torch.long)
        # CPU generators keep only 32 bits of a seed, so the seed enters the checksum itself
        # (crc32 from initial value 0 is plain crc32: seed 0 gives the starts it always gave).
        generator = torch.Generator().manual_seed(zlib.crc32(ids_tensor.numpy().tobytes(), self.config.seed))
        params = self.form.initial(generator, self.embed_rms, self.config.start_noise)  # (p,)
        return _Training(index, ids_tensor, params.to(self.device), margin,
                         self.config.max_steps if budget is None else budget)

    def train(
        self,
        chunks: Sequence[Sequence[int]],
        *,
        budgets: Optional[Sequence[int]] = None,
        on_chunk_done: Optional[Callable[[int, ChunkResult], None]] = None,
        on_step: Optional[Callable[[int, int, float], None]] = None,
    ) -> list[ChunkResult]:
        """Train and verify one vector per chunk of token ids, in the order given.

        ``budgets``: each chunk's step budget (default ``config.max_steps`` for every
        chunk); the codec gives a chunk it can still cut into pieces a smaller one.
        ``on_chunk_done(index, result)`` is called as soon as a chunk is verified (so a
        caller can journal progress); ``on_step(step, n_active, mean_loss)`` after every
        batched step.
        """
        if any(len(ids) == 0 for ids in chunks):
            raise ValueError("every chunk needs at least one token")
        budgets = [self.config.max_steps] * len(chunks) if budgets is None else list(budgets)
        if len(budgets) != len(chunks) or min(budgets, default=1) < 1:
            raise ValueError("need one step budget of at least 1 per chunk")
        results: list[Optional[ChunkResult]] = [None] * len(chunks)
        waiting = deque(range(len(chunks)))
        active: list[_Training] = []
        retrying: deque[_Training] = deque()  # failed their verification, train on first (see _verify)
        stopped: list[tuple[_Training, torch.Tensor]] = []  # (chunk, its last gradient (p,)), waiting for verification
        step = 0
        while waiting or active or retrying or stopped:
            # Verify once a batch's worth has stopped, or when nothing is left to train.
            if stopped and (len(stopped) >= self.config.batch_size or not (waiting or active or retrying)):
                for (chunk, g), result in zip(stopped, self._verify([chunk for chunk, _ in stopped])):
                    if result is None:
                        self._step([chunk], g[None])  # the step it would have taken had it not stopped
                        retrying.append(chunk)
                        continue
                    results[chunk.index] = result
                    if on_chunk_done is not None:
                        on_chunk_done(chunk.index, result)
                stopped = []
                continue
            while (retrying or waiting) and len(active) < self.config.batch_size:
                if retrying:
                    active.append(retrying.popleft())
                else:
                    index = waiting.popleft()
                    active.append(self._start(index, chunks[index], self.config.margin, budgets[index]))
            params = torch.stack([c.params for c in active]).requires_grad_()  # (B, p)
            evaluation = self._evaluate(self.form.vectors(params), active)  # vectors (B, d)
            objective = evaluation.losses + self.form.penalty(params)  # (B,): the form's own term, e.g. a pull to 0
            (grad,) = torch.autograd.grad(objective.sum(), params)  # (B, p)
            step += 1
            if on_step is not None:
                on_step(step, len(active), evaluation.losses.mean().item())
            still_active, rows = [], []
            for row, chunk in enumerate(active):
                chunk.loss, chunk.token_accuracy, chunk.min_margin = (
                    evaluation.loss[row].item(), evaluation.accuracy[row].item(), evaluation.min_margin[row].item())
                if self.config.giveup_window and not chunk.gave_up and chunk.hopeless(
                        evaluation.settled_loss[row].item(), self.config.giveup_window, self.config.giveup_loss):
                    chunk.gave_up, chunk.budget = True, chunk.steps  # stops at its next (full-vocabulary) check
                if evaluation.checked[row] and (len(chunk.short()) <= self._allowed(chunk) or chunk.steps >= chunk.budget):
                    stopped.append((chunk, grad[row]))  # its slot goes to the next chunk; verified with others (see _verify)
                    continue
                still_active.append(chunk)
                rows.append(row)
            self._step(still_active, grad[rows])
            active = still_active
        return results

    def _evaluate(self, vectors: torch.Tensor, active: list[_Training]) -> _Evaluation:
        """Teacher-forced pass for a batch of chunks (see :class:`_Evaluation`); a chunk
        may stop only where ``checked`` (its statistics are full-vocabulary ones). With ``candidates`` set, each chunk's softmax
        runs over its own candidate tokens only (one projection onto the union, the others
        masked, so batch-mates do not change its loss); a chunk is checked against the full
        vocabulary on its first step, every ``refresh_every`` steps, at its step budget,
        and whenever it reaches its margin among its candidates. The full-vocabulary gap
        is never larger than the candidate gap, so no chunk can stop without a full check.
        """
        model = self.train_model
        ids = [c.ids for c in active]
        lengths = torch.tensor([len(t) for t in ids], device=self.device)  # (B,)
        padded = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True).to(self.device)  # (B, T)
        text = model.get_input_embeddings()(padded[:, :-1])  # (B, T-1, d)
        prefix = prompt_embeddings(model, vectors.to(text.dtype))  # (B, 2, d)
        hidden = model.base_model(inputs_embeds=torch.cat([prefix, text], dim=1)).last_hidden_state
        real = torch.arange(padded.shape[1], device=self.device) < lengths[:, None]  # (B, T)
        hidden = hidden[:, prefix.shape[1] - 1 :][real]  # (N, d), N = sum of lengths: m's position predicts t_0
        targets = padded[real]  # (N,)
        row = torch.arange(len(ids), device=self.device)[:, None].expand_as(real)[real]  # (N,)
        worst = self._correctable(active)  # (B,) or None

        if not self.config.candidates:
            losses, accuracy, margin, gap, settled = _chunk_stats(self._logits(hidden), targets, row, lengths, worst,
                                                                  self.config.correction_weight)
            _keep_gaps(active, range(len(active)), gap, row)
            return _Evaluation(losses, losses.detach(), accuracy, margin, torch.ones_like(real[:, 0]), settled)

        due = torch.tensor([c.steps % self.config.refresh_every == 0 or c.steps >= c.budget for c in active], device=self.device)
        full = self._full_check(hidden, targets, row, lengths, worst, due, active)
        vocab = torch.unique(torch.cat([c.candidates for c in active]))  # (C,) sorted
        own = torch.stack([torch.isin(vocab, c.candidates) for c in active])  # (B, C)
        logits = self._logits(hidden, vocab).masked_fill(~own[row], float("-inf"))  # (N, C)
        losses, accuracy, margin, _, settled = _chunk_stats(logits, torch.searchsorted(vocab, targets), row, lengths,
                                                            worst, self.config.correction_weight)
        claims = ~due & (margin >= torch.tensor([c.target_margin for c in active], device=self.device))
        if claims.any():
            claimed = self._full_check(hidden, targets, row, lengths, worst, claims, active)
            full = tuple(torch.where(claims, c, f) for c, f in zip(claimed, full))
        checked = due | claims
        stats = tuple(torch.where(checked, f, c) for f, c in zip(full, (losses.detach(), accuracy, margin)))
        return _Evaluation(losses, *stats, checked, settled)

    @torch.no_grad()
    def _full_check(self, hidden, targets, row, lengths, worst, chunks_mask, active):
        """Full-vocabulary statistics for the chunks in ``chunks_mask`` (B,), (B,) each,
        meaningful only there; refreshes those chunks' candidates: their targets and the
        ``candidates`` highest-scoring tokens at each of their positions."""
        selected = chunks_mask[row]  # (N,)
        if not selected.any():
            return (torch.zeros(len(active), device=self.device),) * 3
        logits = self._logits(hidden[selected].detach())  # (n, V)
        top = logits.topk(self.config.candidates, dim=-1).indices  # (n, k)
        for i in chunks_mask.nonzero()[:, 0].tolist():
            mine = row[selected] == i
            active[i].candidates = torch.unique(torch.cat([active[i].ids.to(self.device), top[mine].flatten()]))
        *stats, gap, _ = _chunk_stats(logits, targets[selected], row[selected], lengths, worst, self.config.correction_weight)
        _keep_gaps(active, chunks_mask.nonzero()[:, 0].tolist(), gap, row[selected])
        return tuple(stats)

    def _correctable(self, active: list[_Training]) -> Optional[torch.Tensor]:
        """How many positions each chunk may correct, (B,), the number of its worst
        positions that :func:`_chunk_stats` weighs down and leaves out of its settled loss;
        None when no chunk may correct any (a form that stores no corrections)."""
        counts = [self._most_corrections(c) for c in active]
        return torch.tensor(counts, device=self.device) if any(counts) else None

    def _logits(self, hidden: torch.Tensor, vocab: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Output logits in fp32 for (N, d) hidden states: over the whole vocabulary (N, V),
        or over the token ids in ``vocab`` only (N, C), with the model's final softcap."""
        head = self.train_model.get_output_embeddings()
        if vocab is None:
            logits = head(hidden)
        else:
            logits = F.linear(hidden, head.weight[vocab], None if head.bias is None else head.bias[vocab])
        logits = logits.float()
        if self.final_softcap:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits

    @torch.no_grad()
    def _step(self, chunks: list[_Training], g: torch.Tensor) -> None:
        """One optimiser step on the chunks still training; ``g`` is their (B', p) gradient.
        Steps are measured in embedding-RMS units of the vector, whatever the form
        (``lr_scale``)."""
        if not chunks:
            return
        params = torch.stack([c.params for c in chunks])  # (B', p)
        first, second = (torch.stack(part) for part in zip(*(c.state for c in chunks)))  # (B', p) each
        unit = self.embed_rms * self.form.lr_scale
        steps = torch.tensor([c.steps for c in chunks], dtype=torch.float32, device=g.device)[:, None]  # (B', 1)
        update = _rprop if self.config.optimizer == "rprop" else _adam
        first, second = update(params, first, second, g, steps, unit, self.config)
        for i, chunk in enumerate(chunks):
            chunk.params, chunk.state = params[i], (first[i], second[i])
            chunk.steps += 1

    def _allowed(self, chunk: _Training) -> int:
        """How many short positions a chunk may stop with and store as corrections: one more
        for every ``correction_steps`` steps it has trained, up to ``corrections``; none for
        a form that stores no corrections."""
        return min(self._most_corrections(chunk), chunk.steps // self.config.correction_steps)

    def _most_corrections(self, chunk: _Training) -> int:
        """Never every position: a record corrects at most n_tokens - 1 (the vector must
        still decide one)."""
        return min(self.config.corrections, len(chunk.ids) - 1) if self.form.corrects else 0

    def _verify(self, chunks: list[_Training]) -> list[Optional[ChunkResult]]:
        """Decode the stored forms of the vectors just measured, all in one batch, each
        forced at the positions it would store as corrections. Returns each chunk's final
        result, or None where it should train on (converged, failed, retry not yet used).

        One batched decode instead of one per chunk: each decode step reads every weight
        (the 262k-row output projection included) whatever its batch, so rows decoded
        together cost far less than as many single-row decodes (BENCHMARKS.md, "Where
        compress's time goes"). The batch is not extract's (that check is the codec's,
        :mod:`llmzip.choose`), as the single-row decode was not either; the margin covers
        the difference."""
        stored = [self._stored(chunk) for chunk in chunks]
        # Teacher forcing already mispredicts a token that is not corrected: greedy decoding
        # cannot pass with a margin, so skip its rows (they dominate when many chunks fail,
        # e.g. text far beyond capacity).
        hopeful = [i for i, (chunk, form) in enumerate(zip(chunks, stored))
                   if all(gap >= 0 for position, gap in enumerate(chunk.gaps) if position not in form.corrector.positions)]
        decoded = [DecodeResult(token_ids=[], min_margin=float("-inf"))] * len(chunks)
        if hopeful:
            rows = decode_batch(self.model, torch.stack([stored[i].vector for i in hopeful]),  # (b, d)
                                [len(chunks[i].ids) for i in hopeful], forced=[stored[i].corrector for i in hopeful])
            for i, row in zip(hopeful, rows):
                decoded[i] = row
                stored[i] = stored[i]._replace(payload=stored[i].corrector.finish(stored[i].payload))  # memory-int-lm: the code of the corrections too
        return [self._result(chunk, form, result) for chunk, form, result in zip(chunks, stored, decoded)]

    def _stored(self, chunk: _Training) -> _Stored:
        """The stored form of the vector just measured, with the positions it corrects."""
        short = chunk.short()
        ids = chunk.ids.tolist()
        corrections = tuple((p, ids[p]) for p in short) if 0 < len(short) <= self._most_corrections(chunk) else ()
        payload, vector = self.form.store(chunk.params, corrections) if corrections else self.form.store(chunk.params)
        corrector = self.form.corrector(payload, corrections, len(ids)) if self.form.corrects else Corrections()
        return _Stored(payload, vector, corrections, corrector, converged=len(short) <= self._allowed(chunk))

    def _result(self, chunk: _Training, stored: _Stored, decoded: DecodeResult) -> Optional[ChunkResult]:
        """The chunk's result from the decode of its stored form, or None (and the chunk
        set up to train on with a doubled margin) where it converged, failed and has not
        retried yet."""
        exact = decoded.token_ids == chunk.ids.tolist()
        accepted = exact and decoded.min_margin >= self.config.verify_margin
        if stored.converged and not accepted and not chunk.retried:
            chunk.retried = True
            chunk.target_margin *= 2
            chunk.budget = chunk.steps + self.config.extra_steps
            return None
        return ChunkResult(
            payload=stored.payload,
            vector=stored.vector,
            exact=exact,
            accepted=accepted,
            decode_min_margin=decoded.min_margin,
            steps=chunk.steps,
            seconds=time.perf_counter() - chunk.started,
            loss=chunk.loss,
            token_accuracy=chunk.token_accuracy,
            train_min_margin=chunk.min_margin,
            converged=stored.converged,
            corrections=stored.corrections,
            gave_up=chunk.gave_up,
        )

def _adam(params, exp_avg, exp_avg_sq, g, steps, unit, config):
    """Adam without weight decay, in place on (B', p) ``params``; ``steps`` (B', 1) counts
    each chunk's earlier steps (bias correction, warmup). Returns the new moments."""
    beta1, beta2 = config.betas
    exp_avg = exp_avg.lerp(g, 1 - beta1)
    exp_avg_sq = exp_avg_sq.mul(beta2).addcmul_(g, g, value=1 - beta2)
    t = steps + 1
    lr = config.lr * unit * torch.clamp(t / config.warmup_steps, max=1.0)
    denom = (exp_avg_sq / (1 - beta2**t)).sqrt_().add_(config.eps)
    params -= lr / (1 - beta1**t) * exp_avg / denom
    return exp_avg, exp_avg_sq


def _rprop(params, last_grad, step_size, g, steps, unit, config):
    """iRprop-, in place on (B', p) ``params``: a coordinate whose gradient kept its sign
    grows its step size, one whose sign flipped shrinks it and skips this step (its kept
    gradient is zero, so next time it neither grows nor shrinks). Step sizes start at
    ``step_size`` and stay within [``min_step_size``, ``max_step_size``], in ``unit``s: a
    floor well above zero keeps a coordinate whose sign flips from freezing, which bf16
    training (gradient signs from a bf16 forward, a vector resolved to 8 bits) otherwise
    does within a few dozen steps (BENCHMARKS.md, attempt 12).
    Returns the kept gradient and the step sizes."""
    step_size = torch.where(steps == 0, torch.full_like(step_size, config.step_size), step_size)
    agreement = torch.sign(g * last_grad)  # (B', p): +1 kept, -1 flipped, 0 first step or after a flip
    factor = torch.where(agreement > 0, RPROP_GROW, torch.where(agreement < 0, RPROP_SHRINK, 1.0))
    step_size = (step_size * factor).clamp_(config.min_step_size, config.max_step_size)
    g = torch.where(agreement < 0, 0.0, g)
    params -= torch.sign(g) * step_size * unit
    return g, step_size


def _chunk_stats(logits: torch.Tensor, targets: torch.Tensor, row: torch.Tensor, lengths: torch.Tensor,
                 worst: Optional[torch.Tensor], weight: float):
    """Per-chunk loss (with grad), token accuracy, smallest gap between the target's logit
    and the best other logit (negative where the argmax is wrong), each (B,), that gap at
    every position (N,), and the settled loss (B,) without grad, from (N, V) logits, (N,)
    targets and the (N,) chunk index of each position (grouped by chunk, in order).

    The loss is a weighted mean cross-entropy: each chunk's ``worst`` (B,) positions of
    highest cross-entropy count ``weight``, the others 1. A chunk that may stop with that
    many positions corrected needs only the others at the margin, so its vector is spent
    on the positions it can hold rather than pulled towards tokens it will not; a small
    weight, not 0, keeps the corrected tokens likely enough to stay cheap to code
    (BENCHMARKS.md, attempt 25). The settled loss is the mean cross-entropy of the others
    alone: what must fall for the chunk to stop (the give-up rule reads it). ``worst``
    None: no position is left out, the loss is the plain mean."""
    n_chunks = len(lengths)
    token_loss = F.cross_entropy(logits, targets, reduction="none")  # (N,)
    correctable = _worst_positions(token_loss.detach(), row, n_chunks, worst)  # (N,) bool
    zeros = torch.zeros(n_chunks, device=logits.device)

    def mean(values, weights):  # per chunk; a chunk with no positions here (a full check of some) gets 0, not 0/0
        return zeros.index_add(0, row, values * weights) / zeros.index_add(0, row, weights).clamp(min=1.0)

    losses = mean(token_loss, torch.where(correctable, weight, 1.0))
    with torch.no_grad():
        settled = mean(token_loss.detach(), (~correctable).float())
        top = logits.topk(2, dim=-1)  # (N, 2)
        hit = top.indices[:, 0] == targets
        runner_up = torch.where(hit, top.values[:, 1], top.values[:, 0])
        gap = logits.gather(1, targets[:, None])[:, 0] - runner_up  # (N,)
        margin = torch.full((n_chunks,), float("inf"), device=logits.device).scatter_reduce(0, row, gap, reduce="amin")
        accuracy = zeros.index_add(0, row, hit.float()) / lengths
    return losses, accuracy, margin, gap, settled


def _worst_positions(token_loss: torch.Tensor, row: torch.Tensor, n_chunks: int,
                     worst: Optional[torch.Tensor]) -> torch.Tensor:
    """(N,) True at each chunk's ``worst`` (B,) positions of highest ``token_loss`` (N,);
    ``row`` (N,) is each position's chunk, grouped. All False for ``worst`` None."""
    if worst is None:
        return torch.zeros_like(row, dtype=torch.bool)
    counts = torch.bincount(row, minlength=n_chunks)  # (B,)
    starts = counts.cumsum(0) - counts  # (B,) first position of each chunk
    order = token_loss.argsort(descending=True, stable=True)  # (N,) highest loss first
    order = order[row[order].argsort(stable=True)]  # (N,) grouped by chunk, highest loss first in each
    rank = torch.empty_like(row)
    rank[order] = torch.arange(len(row), device=row.device) - starts[row[order]]  # (N,) 0 = chunk's worst
    return rank < worst[row]


def _keep_gaps(active: list[_Training], chunks: Sequence[int], gap: torch.Tensor, row: torch.Tensor) -> None:
    """Store each listed chunk's per-position gaps ((N,) ``gap`` of rows ``row``)."""
    for i in chunks:
        active[i].gaps = gap[row == i].tolist()
