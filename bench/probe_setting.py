"""Steps to converge for one engine setting on chosen benchmark rows (an A/B probe).

Step counts do not depend on machine load, so probes can share the machine; their wall
times are not comparable. Rows come from the memory-token paper's corpora
(``$LLMZIP_PAPER_DATA``, see bench/corpus.py; ``--csv`` takes a corpus name or a path).

    python bench/probe_setting.py --rows 3,4 --candidates 0        # full-vocabulary softmax
    python bench/probe_setting.py --rows 3,4 --template mem        # vector alone, no BOS
    python bench/probe_setting.py --csv raschka_chunks_1000.csv --tokens 64 --rows 0-19 --start fitted
    python bench/probe_setting.py --rows 0,1,2,3,4,5 --train-dtype bfloat16     # bf16 training copy
    python bench/probe_setting.py --form codec --csv raschka_chunks_1000.csv --tokens 64 --rows 0-19

``--form fp16`` (the default) trains full fp16 vectors (kind memory) with TrainConfig's
defaults but a seeded random start unless ``--start fitted``; ``--form codec`` trains
exactly as ``llmzip compress`` does (the model's default stored form, kind memory-int-lm
for the default model, and TrainConfig's defaults: fitted start, Rprop, corrections), so
its step counts are those of compress's chunks of the same tokens.

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
from corpus import CSV_100, read_rows, span
from llmzip.model import load_model
from llmzip.train import MemoryTrainer, TrainConfig, configured_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="3,4", help="CSV row numbers, e.g. 3,4 or 0-19")
    parser.add_argument("--csv", default=CSV_100, help="corpus (column 'chunk'): a name in $LLMZIP_PAPER_DATA or a path")
    parser.add_argument("--tokens", type=int, help="train only the first TOKENS tokens of each row")
    parser.add_argument("--model", default="default")
    parser.add_argument("--form", choices=["fp16", "codec"], default="fp16",
                        help="full fp16 vectors, or the stored form and trainer llmzip compress uses")
    parser.add_argument("--template", choices=["bos+mem", "mem"], default="bos+mem")
    parser.add_argument("--lr", type=float, help=f"[default: {TrainConfig.lr}]")
    parser.add_argument("--max-steps", type=int, help=f"[default: {TrainConfig.max_steps}]")
    parser.add_argument("--candidates", type=int, help=f"[default: {TrainConfig.candidates}]")
    parser.add_argument("--train-dtype", choices=["auto", "float32", "bfloat16"],
                        help=f"[default: {TrainConfig.train_dtype}]")
    parser.add_argument("--start", choices=["random", "fitted"],
                        help="start vectors: seeded random, or the model's shipped fitted start (llmzip/starts/) "
                             "[default: random with --form fp16, TrainConfig's with --form codec]")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any other TrainConfig field, e.g. --set betas=0.9,0.99 (repeatable)")
    parser.add_argument("--trace", help="write every chunk's statistics at every step here (jsonl)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.template == "mem":
        llmzip.decode.prompt_embeddings = llmzip.train.prompt_embeddings = lambda model, vectors: vectors[:, None]

    rows = span(args.rows)
    texts = read_rows(max(rows) + 1, args.csv)
    loaded = load_model(args.model)
    chunks = [loaded.tokenizer(texts[r], add_special_tokens=False).input_ids[: args.tokens] for r in rows]
    given = {"lr": args.lr, "candidates": args.candidates, "max_steps": args.max_steps,
             "train_dtype": args.train_dtype, "start": args.start or ("random" if args.form == "fp16" else None)}
    config = TrainConfig(**{name: value for name, value in given.items() if value is not None},
                         **dict(parse_field(item) for item in args.set))
    if args.form == "codec":
        from llmzip.codec import LmzCompressor

        trainer = LmzCompressor(loaded=loaded, train=config).trainer  # compress's own trainer and form
    else:
        trainer = MemoryTrainer(loaded.model, config, start=configured_start(config, loaded.identity.weights_fingerprint))
    print(trainer.config, flush=True)
    began = time.perf_counter()

    def report(index, result):
        print(f"row {rows[index]}: {len(chunks[index])} tokens, steps {result.steps} accepted {result.accepted} "
              f"acc {result.token_accuracy:.3f} margin {result.decode_min_margin:.2f}, "
              f"{len(result.corrections)} corrections, {len(result.payload)} B at {time.perf_counter() - began:.0f}s",
              flush=True)

    if args.trace:
        trace_steps(trainer, rows, open(args.trace, "w"))
    results = trainer.train(chunks, on_chunk_done=report)
    kept = [r for r in results if r.accepted]
    steps = [r.steps for r in results]
    print(f"{vars(args)}: steps {steps} (sum {sum(steps)}, mean {sum(steps) / len(steps):.1f}), accepted "
          f"{len(kept)}/{len(results)}, min decode margin {min(r.decode_min_margin for r in results):.2f}, "
          f"a kept chunk: {sum(len(r.corrections) for r in kept) / max(1, len(kept)):.1f} corrections, "
          f"{sum(len(r.payload) for r in kept) / max(1, len(kept)):.0f} B; {time.perf_counter() - began:.1f} s",
          file=sys.stderr)


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
