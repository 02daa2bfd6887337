"""Where does a training step's time go, and what does decode() cost?

Times the trainer's batched step (forward + backward to the memory vectors + Adam) for
several batch sizes and training dtypes, prints a torch.profiler table of one step
grouped by operator, and times decode() with the KV cache against recomputing the whole
sequence at every token, in fp32 and bf16.

    python bench/profile_step.py --rows 8 --steps 3 --threads 1
    python bench/profile_step.py --csv raschka_chunks_1000.csv --tokens 64 --rows 16 --steps 3 \
        --threads 2 --parts steps,profile --settings "bfloat16 candidates"   # compress's steps on AVX-512 BF16 / AMX
"""

import argparse
import time

import torch

from corpus import CSV_100, read_rows
from llmzip.decode import decode, prompt_embeddings
from llmzip.model import load_model
from llmzip.train import MemoryTrainer, TrainConfig

SETTINGS = {
    "float32 full vocab": TrainConfig(train_dtype="float32", candidates=0),
    "bfloat16 full vocab": TrainConfig(train_dtype="bfloat16", candidates=0),
    "float32 candidates": TrainConfig(train_dtype="float32"),
    "bfloat16 candidates": TrainConfig(train_dtype="bfloat16"),  # compress's steps where bf16 is native
}


def read_chunks(tokenizer, n_rows: int, csv: str, tokens: int | None) -> list[list[int]]:
    return [tokenizer(t, add_special_tokens=False).input_ids[:tokens] for t in read_rows(n_rows, csv)]


def warm_batch(trainer: MemoryTrainer, chunks: list[list[int]]) -> list:
    """The trainer's per-chunk states after one (full-vocabulary) step, so that the
    steps that follow are the restricted ones between refreshes."""
    active = [trainer._start(i, ids, trainer.config.margin) for i, ids in enumerate(chunks)]
    one_step(trainer, active)
    for chunk in active:
        chunk.steps = 1  # not due for a full-vocabulary refresh
    return active


def one_step(trainer: MemoryTrainer, active: list) -> None:
    """Forward and gradient to the vectors, as MemoryTrainer.train does (Adam is negligible)."""
    params = torch.stack([c.params for c in active]).requires_grad_()  # (B, p): the form's parameters
    losses = trainer._evaluate(trainer.form.vectors(params), active).losses  # vectors (B, d)
    torch.autograd.grad(losses.sum(), params)


def time_steps(trainer: MemoryTrainer, chunks: list[list[int]], n_steps: int) -> float:
    """Seconds per batched step, after a warm-up step."""
    active = warm_batch(trainer, chunks)
    start = time.perf_counter()
    for _ in range(n_steps):
        one_step(trainer, active)
    return (time.perf_counter() - start) / n_steps


@torch.no_grad()
def decode_without_cache(model, vector: torch.Tensor, n_tokens: int) -> list[int]:
    """The alternative to decode()'s KV cache: one full forward per generated token."""
    dtype = model.get_input_embeddings().weight.dtype
    embeds = prompt_embeddings(model, vector.to(dtype)[None])  # (1, 2, d)
    ids: list[int] = []
    for _ in range(n_tokens):
        logits = model(inputs_embeds=embeds, use_cache=False).logits[0, -1]  # (V,)
        ids.append(int(logits.argmax()))
        next_embed = model.get_input_embeddings()(torch.tensor([[ids[-1]]]))  # (1, 1, d)
        embeds = torch.cat([embeds, next_embed], dim=1)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--rows", type=int, default=8, help="CSV rows = largest batch")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (see engine_vs_paper.py)")
    parser.add_argument("--parts", default="steps,profile,decode", help="comma-separated subset to run")
    parser.add_argument("--csv", default=CSV_100, help="corpus: a name in $LLMZIP_PAPER_DATA or a path")
    parser.add_argument("--tokens", type=int, help="only the first TOKENS tokens of each row")
    parser.add_argument("--settings", default="float32 full vocab,bfloat16 full vocab,float32 candidates",
                        help=f"comma-separated, of: {', '.join(SETTINGS)}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = args.parts.split(",")

    loaded = load_model(args.model)
    chunks = read_chunks(loaded.tokenizer, args.rows, args.csv, args.tokens)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, chunk tokens {[len(c) for c in chunks]}")

    trainers = {name: MemoryTrainer(loaded.model, SETTINGS[name]) for name in args.settings.split(",")}
    if "steps" in parts:
        step_table(trainers, chunks, args.steps)
    if "profile" in parts:
        for name in [name for name in trainers if "full vocab" not in name or name.startswith("float32")]:
            print(f"\n== profile of one {name} step, batch {len(chunks)} ==")
            active = warm_batch(trainers[name], chunks)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
                one_step(trainers[name], active)
            # Shapes tell the vocabulary projection ([N, 640] x [640, 262144]) from the layers.
            print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=15))
    if "decode" in parts:
        trainer = MemoryTrainer(loaded.model, SETTINGS["bfloat16 full vocab"])
        models = {"float32": loaded.model, "bfloat16": trainer.train_model}
        decode_table(models, len(chunks[0]), trainer.embed_rms)


def step_table(trainers: dict, chunks: list[list[int]], n_steps: int) -> None:
    print("\n== seconds per step (per chunk-step) ==")
    for name, trainer in trainers.items():
        # bf16 backward through the whole vocabulary took about a minute on an AVX2-only CPU: batch 1 is enough.
        full_bf16 = trainer.config.train_dtype == "bfloat16" and not trainer.config.candidates
        for batch in [1] if full_bf16 else sorted({1, 2, 4, 8, len(chunks)} & set(range(1, len(chunks) + 1))):
            s = time_steps(trainer, chunks[:batch], n_steps)
            print(f"{name:20s} batch {batch:2d}: {s:.3f} s/step, {s / batch:.3f} s/chunk-step", flush=True)


def decode_table(models: dict, n_tokens: int, scale: float) -> None:
    print("\n== decode() cost per chunk ==")
    vector = (torch.randn(next(iter(models.values())).config.hidden_size) * scale).half()  # (d,)
    for dtype, model in models.items():
        for name, fn in (("kv cache", decode), ("no cache", decode_without_cache)):
            fn(model, vector, n_tokens)  # warm-up
            start = time.perf_counter()
            fn(model, vector, n_tokens)
            print(f"{dtype:9s} {name}: {time.perf_counter() - start:.3f} s for {n_tokens} tokens", flush=True)

if __name__ == "__main__":
    main()
