"""Steps to converge for one engine setting on chosen benchmark rows (an A/B probe).

Step counts do not depend on machine load, so probes can share the machine; their wall
times are not comparable.

    python bench/probe_setting.py --rows 3,4 --candidates 0        # full-vocabulary softmax
    python bench/probe_setting.py --rows 3,4 --template mem        # vector alone, no BOS
    python bench/probe_setting.py --csv /work/shared/data/memory-token-paper/raschka_chunks_1000.csv --tokens 64 --lr 1
    python bench/probe_setting.py --rows 0,1,2,3,4,5 --train-dtype bfloat16     # bf16 training copy

``--template mem`` swaps :func:`llmzip.decode.prompt_embeddings` for the vector alone in
both training and decode(), for this process only: llmzip itself has one layout.
"""

import argparse
import json
import sys
import time

import torch

import llmzip.decode
import llmzip.train
from corpus import CSV_PATH, read_rows
from llmzip.model import load_model
from llmzip.train import MemoryTrainer, TrainConfig, configured_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="3,4", help="comma-separated CSV row numbers")
    parser.add_argument("--csv", default=CSV_PATH, help="corpus (column 'chunk')")
    parser.add_argument("--tokens", type=int, help="train only the first TOKENS tokens of each row")
    parser.add_argument("--template", choices=["bos+mem", "mem"], default="bos+mem")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--max-steps", type=int, default=TrainConfig.max_steps)
    parser.add_argument("--candidates", type=int, default=TrainConfig.candidates)
    parser.add_argument("--train-dtype", default=TrainConfig.train_dtype, choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--start", default="random", choices=["random", "fitted"],
                        help="start vectors: seeded random, or the model's shipped fitted start (llmzip/starts/)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any other TrainConfig field, e.g. --set betas=0.9,0.99 (repeatable)")
    parser.add_argument("--trace", help="write every chunk's statistics at every step here (jsonl)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.template == "mem":
        llmzip.decode.prompt_embeddings = llmzip.train.prompt_embeddings = lambda model, vectors: vectors[:, None]

    rows = [int(r) for part in args.rows.split(",") for r in
            (range(int(part.split("-")[0]), int(part.split("-")[1]) + 1) if "-" in part else [int(part)])]
    loaded = load_model("default")
    texts = read_rows(max(rows) + 1, args.csv)
    chunks = [loaded.tokenizer(texts[r], add_special_tokens=False).input_ids[: args.tokens] for r in rows]
    config = TrainConfig(lr=args.lr, candidates=args.candidates, max_steps=args.max_steps, train_dtype=args.train_dtype,
                         start=args.start, **dict(parse_field(item) for item in args.set))
    began = time.perf_counter()

    def report(index, result):
        print(f"row {rows[index]}: steps {result.steps} accepted {result.accepted} acc {result.token_accuracy:.3f} "
              f"margin {result.decode_min_margin:.2f} at {time.perf_counter() - began:.0f}s", flush=True)

    trainer = MemoryTrainer(loaded.model, config, start=configured_start(config, loaded.identity.weights_fingerprint))
    if args.trace:
        trace_steps(trainer, rows, open(args.trace, "w"))
    results = trainer.train(chunks, on_chunk_done=report)
    print(f"{vars(args)}: steps {[r.steps for r in results]} (sum {sum(r.steps for r in results)}), accepted "
          f"{sum(r.accepted for r in results)}/{len(results)}, min decode margin "
          f"{min(r.decode_min_margin for r in results):.2f}, {time.perf_counter() - began:.1f} s", file=sys.stderr)


def parse_field(item: str) -> tuple:
    """``FIELD=VALUE`` as a TrainConfig keyword, VALUE typed like the field's default."""
    name, value = item.split("=", 1)
    default = getattr(TrainConfig, name)
    if isinstance(default, tuple):
        return name, tuple(float(v) for v in value.split(","))
    return name, value if isinstance(default, str) or default is None else type(default)(value)


def trace_steps(trainer: MemoryTrainer, rows: list[int], out) -> None:
    """Wrap ``trainer._evaluate`` (a probe's instrument, not an API) to log, at every step,
    each active chunk's loss, accuracy, smallest gap and short positions (where checked),
    and its settled loss where the trainer computes one (chunks may give up)."""
    evaluate = trainer._evaluate

    def traced(vectors, active):
        evaluation = evaluate(vectors, active)
        for i, chunk in enumerate(active):
            checked = bool(evaluation.checked[i])
            record = {"row": rows[chunk.index], "step": chunk.steps, "loss": round(evaluation.loss[i].item(), 4),
                      "acc": round(evaluation.accuracy[i].item(), 4), "margin": round(evaluation.min_margin[i].item(), 3),
                      "checked": checked, "short": len(chunk.short()) if checked else None}
            record["settled"] = round(evaluation.settled_loss[i].item(), 4)
            out.write(json.dumps(record) + "\n")
        out.flush()
        return evaluation

    trainer._evaluate = traced


if __name__ == "__main__":
    main()
