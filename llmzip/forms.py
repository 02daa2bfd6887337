"""Training forms: how :class:`llmzip.train.MemoryTrainer` parametrises a memory vector
while it trains it, and how it stores the result as a record of one chunk kind.

A form gives the trainer its parameters' start (:meth:`initial`), the vectors the model is
prompted with (:meth:`vectors`, differentiable), what it adds to each chunk's loss
(:meth:`penalty`) and the stored form (:meth:`store`: the record's payload, and the vector
extract rebuilds from it, which the trainer verifies). The kinds (:mod:`llmzip.kinds`) say
what those records mean; the forms are the writer's side only, so they live here, beside
the trainer, and the kinds never import them.

* :class:`Fp16Form`: the full (d,) vector, stored as fp16 (kind ``memory``);
* :class:`IntVectorForm`: k integer coefficients (kind ``memory-int``);
* :class:`CodedVectorForm`: the same, range coded, with corrections and a grid made for the
  code; :class:`LmCorrectedVectorForm` stores it as kind ``memory-int-lm``, the default.
  (Kind ``memory-int-coded`` is read only; its form is in ``fixtures/legacy_writers.py``.)
"""

from __future__ import annotations

import math

import torch

from llmzip.kinds import memory, memory_int, memory_int_lm
from llmzip.kinds.memory_int import CLIP, MIN_SCALE, IntVectorChunk, basis, pack_coefficients, qmax, rebuild
from llmzip.kinds.memory_int_lm import CodingTokens, LmCorrectedVectorChunk, parse_payload, write_coefficients
from llmzip.kinds.rangecode import pack_words


class Fp16Form:
    """How the trainer parametrises a full vector: the (d,) float32 vector itself, prompted
    as is while training and rounded to fp16 when stored."""

    kind = memory.KIND
    lr_scale = 1.0
    corrects = False  # stores no corrected positions

    def __init__(self, vector_dim: int, start=None):
        self.n_params = vector_dim
        self.start = start  # (d,) float32 tensor where every vector starts, or None (seeded noise alone)

    def initial(self, generator, embed_rms: float, start_noise: float):
        """The start vector (d,): seeded noise at the embeddings' scale, or the fitted start
        plus ``start_noise`` times that noise."""
        vector = torch.randn(self.n_params, generator=generator) * embed_rms
        return vector if self.start is None else self.start.float().cpu() + start_noise * vector

    def vectors(self, params):
        return params  # (B, d)

    def penalty(self, params):
        """What this form adds to each chunk's loss: nothing."""
        return 0.0

    def store(self, params):
        """(the fp16 bytes the record holds, the (d,) float16 vector they are)."""
        vector = params.detach().to("cpu", torch.float16).contiguous()
        return vector.numpy().astype("<f2").tobytes(), vector


class IntVectorForm:
    """How the trainer parametrises a memory-int vector: ``z`` (k,) float, prompted with the
    vector of its quantised form (straight-through), stored as
    :class:`~llmzip.kinds.memory_int.IntVectorChunk`."""

    kind = memory_int.KIND
    corrects = False  # stores no corrected positions (the coded forms do)

    def __init__(self, rank: int, bits: int, offset, vector_dim: int):
        widths = memory_int.BITS
        if not 1 <= rank <= vector_dim or bits not in widths:
            raise ValueError(f"rank must be in 1..{vector_dim} and bits in {widths[0]}..{widths[-1]}, got rank {rank}, "
                             f"bits {bits}")
        self.rank, self.bits, self.vector_dim = rank, bits, vector_dim
        self.offset = offset  # (d,) float32 numpy or None
        self.n_params = rank
        # a coefficient's step moves v by ~sqrt(k) x as much with random signs, by as much with the identity
        self.lr_scale = 1.0 if rank == vector_dim else 1 / math.sqrt(rank)
        self._basis = torch.tensor(basis(vector_dim, rank), dtype=torch.float32)  # (d, k); moved to z's device
        self._offset = torch.zeros(vector_dim) if offset is None else torch.from_numpy(offset.copy())  # (d,)

    def initial(self, generator, embed_rms: float, start_noise: float):
        """Start coefficients (k,): seeded noise, small around the offset where there is one."""
        z = torch.randn(self.rank, generator=generator) * embed_rms * self.lr_scale
        return z * start_noise if self.offset is not None else z

    def penalty(self, z):
        """What this form adds to each chunk's loss: nothing (see :class:`CodedVectorForm`)."""
        return 0.0

    def _scale(self, z):
        """Each vector's grid step, (B, 1) fp16 values, from z (B, k): the grid's last level
        at CLIP x RMS (outliers clamped), or at the largest |z| for widths without a clip."""
        reach = z.abs().amax(-1, keepdim=True)  # (B, 1)
        if self.bits in CLIP:
            reach = torch.minimum(reach, CLIP[self.bits] * z.pow(2).mean(-1, keepdim=True).sqrt())
        return (reach / qmax(self.bits)).clamp_min(MIN_SCALE).half().float()

    def _quantise(self, z):
        """Scale (B, 1) as fp16 values and integer coefficients (B, k), from z (B, k)."""
        scale = self._scale(z)
        return scale, (z / scale).round().clamp(-qmax(self.bits), qmax(self.bits))

    def vectors(self, z):
        """(B, k) -> (B, d): the quantised vectors, differentiable in z (straight-through)."""
        scale, q = self._quantise(z.detach())
        zq = z + (q * scale - z).detach()
        if self._basis.device != z.device:  # once: the trainer's device
            self._basis, self._offset = self._basis.to(z.device), self._offset.to(z.device)
        return self._offset + zq @ self._basis.T

    def store(self, z, *record_fields):
        """(the record's payload, see the kind's chunk ``payload``; the (d,) float32 vector
        extract rebuilds from it). ``record_fields``: what else the form's record holds
        (the coded forms: the corrections)."""
        scale, q = self._quantise(z.detach().float().cpu()[None])
        form = self._record(float(scale[0, 0]), q[0].long().numpy(), *record_fields)
        return form.payload, torch.from_numpy(rebuild([form], self.vector_dim, self.offset))[0]

    def _record(self, scale: float, q) -> IntVectorChunk:
        """The stored form of a vector (the chunk fields after the vector's are unused)."""
        return IntVectorChunk(self.rank, self.bits, scale, pack_coefficients(q, self.bits),
                              n_tokens=1, length=1, check=0, min_margin=0.0)


class CodedVectorForm(IntVectorForm):
    """:class:`IntVectorForm` for a range-coded record (up to 8 bits): corrections the
    trainer may ask for, and optionally a grid made for the code. A subclass names the kind
    and writes its record (:meth:`_record`, :meth:`corrector`).

    With ``grid`` > 0 every vector's scale is that one fixed step (fp16) instead of a
    multiple of its own RMS, and ``sparsity`` adds ``sparsity * mean(|z|) / grid`` to each
    chunk's loss: a pull towards the offset that the text's own gradient must outweigh, so
    coordinates the chunk does not need end at coefficient 0, the symbol the adaptive code
    makes cheapest. On the GPL-3 preamble's chunks at 4 bits, grid 6.0 and sparsity 1.0 left
    ~300 of 640 coefficients at 0 and coded them in ~212 B instead of ~281 B
    (BENCHMARKS.md, "Coded vectors")."""

    corrects = True

    def __init__(self, rank: int, bits: int, offset, vector_dim: int, grid: float = 0.0, sparsity: float = 0.0):
        widths = memory_int_lm.BITS
        if bits not in widths:
            raise ValueError(f"a coded vector's bits must be in {widths[0]}..{widths[-1]}, got {bits}")
        if not (grid >= 0 and sparsity >= 0) or sparsity and not grid:
            raise ValueError(f"grid and sparsity must be >= 0, sparsity only with a grid; got {grid}, {sparsity}")
        super().__init__(rank, bits, offset, vector_dim)
        self.grid = memory_int.fp16_scale(grid) if grid else 0.0
        self.sparsity = sparsity

    def _scale(self, z):
        return z.new_full((len(z), 1), self.grid) if self.grid else super()._scale(z)  # (B, 1)

    def penalty(self, z):
        """(B,) added to the chunks' losses (see the class docstring), or 0."""
        return self.sparsity * z.abs().mean(-1) / self.grid if self.sparsity else 0.0

    def corrector(self, payload: bytes, corrections, n_tokens: int):
        """What the decode that verifies the stored form (``payload``, a chunk of
        ``n_tokens``) takes at ``corrections``' positions, a
        :class:`~llmzip.corrections.Corrections` whose
        :meth:`~llmzip.corrections.Corrections.finish` gives the payload to store."""
        raise NotImplementedError


class LmCorrectedVectorForm(CodedVectorForm):
    """:class:`CodedVectorForm` stored as kind memory-int-lm: the verifying decode codes
    the corrections under the model (:class:`~llmzip.kinds.memory_int_lm.CodingTokens`)."""

    kind = memory_int_lm.KIND

    def corrector(self, payload: bytes, corrections, n_tokens: int):
        chunk = LmCorrectedVectorChunk(*parse_payload(payload, self.vector_dim, "trained chunk"), n_tokens=n_tokens,
                                       length=n_tokens, check=0, min_margin=0.0)
        return CodingTokens(chunk, corrections)

    def _record(self, scale: float, q, corrections=()) -> LmCorrectedVectorChunk:
        """The stored form before the decode: the coefficients alone (:class:`CodingTokens`
        writes the whole code)."""
        import constriction

        coder = constriction.stream.queue.RangeEncoder()
        write_coefficients(coder, q, self.bits)
        return LmCorrectedVectorChunk(self.rank, self.bits, scale, pack_words(coder.get_compressed()), n_tokens=1,
                                      length=1, check=0, min_margin=0.0)
