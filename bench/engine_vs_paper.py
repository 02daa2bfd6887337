"""Our memory-token engine against the paper's recipe, on the same chunks, in one process.

(a) ours: :class:`llmzip.train.MemoryTrainer` with its defaults (batched, fp32 on this
    CPU, the model's fitted start vector, per-chunk Rprop, margin, candidate softmax, fp16
    verification), full fp16 vectors as the paper stores them;
(b) the paper's recipe (Sastre & Rosá 2025): one vector at a time, plain SGD at lr 5.0,
    fp32, stop as soon as the teacher-forced argmax matches every target, at most 3000
    steps.

Both arms use the same prompt layout (:func:`llmzip.decode.prompt_embeddings`) and are
judged by the same :func:`llmzip.decode.decode` of the fp16-rounded vector.

    python bench/engine_vs_paper.py --rows 6 --threads 1 --arms ours,ours-rprop,paper \\
        --json bench/results/engine_vs_paper_cpu_issue14_clean.json
"""

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, asdict

import torch
import torch.nn.functional as F

from corpus import read_rows
from llmzip.bench import machine as bench_machine
from llmzip.decode import decode, prompt_embeddings
from llmzip.model import load_model
from llmzip.train import MemoryTrainer, TrainConfig, configured_start

@dataclass
class ArmChunk:
    tokens: int
    steps: int
    seconds: float
    exact: bool
    decode_min_margin: float


def paper_recipe(model, ids: list[int], *, lr: float = 5.0, max_steps: int = 3000, seed: int = 0):
    """Train one vector the paper's way; returns (fp16 vector, steps taken)."""
    targets = torch.tensor(ids)  # (T,)
    text = model.get_input_embeddings()(targets[None, :-1])  # (1, T-1, d)
    scale = model.get_input_embeddings()(targets).float().pow(2).mean().sqrt()  # real-embedding RMS
    generator = torch.Generator().manual_seed(seed)
    vector = (torch.randn(model.config.hidden_size, generator=generator) * scale).requires_grad_()  # (d,)
    optimizer = torch.optim.SGD([vector], lr=lr)
    steps = 0
    while True:
        embeds = torch.cat([prompt_embeddings(model, vector[None]), text], dim=1)  # (1, T+1, d)
        logits = model(inputs_embeds=embeds).logits[0, 1:]  # (T, V)
        if torch.equal(logits.argmax(-1), targets) or steps == max_steps:
            return vector.detach().half(), steps
        optimizer.zero_grad()
        F.cross_entropy(logits, targets).backward()
        optimizer.step()
        steps += 1


def run_paper(model, chunks: list[list[int]]) -> list[ArmChunk]:
    results = []
    for i, ids in enumerate(chunks):
        start = time.perf_counter()
        vector, steps = paper_recipe(model, ids)
        decoded = decode(model, vector, len(ids))
        results.append(ArmChunk(len(ids), steps, time.perf_counter() - start, decoded.token_ids == ids, decoded.min_margin))
        print(f"paper chunk {i}: {results[-1]}", file=sys.stderr, flush=True)
    return results


def run_ours(model, chunks: list[list[int]], config: TrainConfig, start) -> list[ArmChunk]:
    trainer = MemoryTrainer(model, config, start=start)

    def report(index, result):
        print(f"ours chunk {index}: steps {result.steps} accepted {result.accepted} "
              f"margin {result.decode_min_margin:.2f} {result.seconds:.1f}s", file=sys.stderr, flush=True)

    def progress(step, n_active, mean_loss):
        if step % 25 == 0:
            print(f"ours step {step}: {n_active} active, mean loss {mean_loss:.3f}", file=sys.stderr, flush=True)

    results = trainer.train(chunks, on_chunk_done=report, on_step=progress)
    return [ArmChunk(len(ids), r.steps, r.seconds, r.accepted, r.decode_min_margin) for ids, r in zip(chunks, results)]


def summarise(name: str, arm: list[ArmChunk], wall: float) -> dict:
    n_exact = sum(c.exact for c in arm)
    return {
        "arm": name,
        "chunks": len(arm),
        "exact": n_exact,
        "mean_steps": sum(c.steps for c in arm) / len(arm),
        "wall_seconds": wall,
        "seconds_per_chunk": wall / len(arm),
        "seconds_per_exact_chunk": wall / n_exact if n_exact else float("inf"),
        "min_decode_margin": min(c.decode_min_margin for c in arm),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--rows", type=int, default=10, help="first CSV rows to use, same for both arms")
    parser.add_argument("--arms", default="ours,paper",
                        help="comma-separated: ours (the engine's defaults), ours-rprop (with optimizer='rprop'), paper")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both arms; on a shared 2-core machine 2 threads ran 4x slower than 1")
    parser.add_argument("--json", help="write the per-chunk results and the summary here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    loaded = load_model(args.model)
    texts = read_rows(args.rows)
    chunks = [loaded.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    assert all(loaded.tokenizer.decode(ids) == t for ids, t in zip(chunks, texts)), "tokens do not round-trip"
    machine = {**bench_machine(), "load_average_start": os.getloadavg(), "tokens_per_chunk": [len(c) for c in chunks]}
    print(json.dumps(machine), file=sys.stderr, flush=True)

    summaries, per_chunk = [], {}
    for name in args.arms.split(","):
        start = time.perf_counter()
        if name in ("ours", "ours-rprop"):
            config = TrainConfig(batch_size=args.batch_size, **({"optimizer": "rprop"} if name == "ours-rprop" else {}))
            arm = run_ours(loaded.model, chunks, config, configured_start(config, loaded.identity.weights_fingerprint))
        elif name == "paper":
            arm = run_paper(loaded.model, chunks)
        else:
            raise SystemExit(f"unknown arm {name!r}")
        summaries.append(summarise(name, arm, time.perf_counter() - start))
        per_chunk[name] = [asdict(c) for c in arm]
        print(json.dumps(summaries[-1]), file=sys.stderr, flush=True)
        machine["load_average_end"] = os.getloadavg()
        if args.json:  # after each arm, so a finished arm survives an interrupted run
            with open(args.json, "w") as f:
                json.dump({"machine": machine, "summary": summaries, "chunks": per_chunk}, f, indent=1)

    print("| arm | chunks | exact | mean steps | wall s | s/chunk | s/exact chunk | min decode margin |")
    print("|---|---|---|---|---|---|---|---|")
    for s in summaries:
        print(f"| {s['arm']} | {s['chunks']} | {s['exact']} | {s['mean_steps']:.0f} | {s['wall_seconds']:.0f} "
              f"| {s['seconds_per_chunk']:.1f} | {s['seconds_per_exact_chunk']:.1f} | {s['min_decode_margin']:.2f} |")
    paper = next((s for s in summaries if s["arm"] == "paper"), None)
    for ours in (s for s in summaries if paper is not None and s is not paper):
        print(f"\n{ours['arm']}: speed-up in seconds per exact chunk: "
              f"{paper['seconds_per_exact_chunk'] / ours['seconds_per_exact_chunk']:.1f}x")


if __name__ == "__main__":
    main()
