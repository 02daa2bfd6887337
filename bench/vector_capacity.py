"""Bytes per stored vector against text held: the map behind the default vector form.

For each stored form and each set of chunks, train every chunk with the default engine and
record whether its *stored* form decodes exactly, alone (the trainer verifies exactly what
would be written), its steps, seconds, decode margin and stored bytes. Forms: ``RANK:BITS``
(``rank`` coefficients of ``bits`` bits at fixed width, kind memory-int; rank 0 is the full
fp16 vector of kind memory) or ``coded:BITS:GRID:SPARSITY[:RANK]`` (the codec's range-coded
form, kind memory-int-lm, built by ``LmzCompressor`` exactly as compress builds it, without
corrections: a standalone vector; grid 0 = each vector's own RMS grid; rank defaults to the
model's hidden size).

    python bench/vector_capacity.py --set c100:0-19 --forms 0:16,640:8,640:4,128:8 \
        --json bench/results/vector_capacity_c100.json
    python bench/vector_capacity.py --set t64:0-19 --forms 640:4 --max-steps 600 --json ...
    python bench/vector_capacity.py --set t64:0-11 --forms coded:4:6.0:1.25,coded:4:0:0 --max-steps 800 \
        --json bench/results/standalone_t64.json

Sets: ``c100:ROWS`` the paper's 100-character chunks; ``tN:ROWS`` the first N tokens of
the paper's 1000-character chunks. Results are appended to the JSON file (one object per
form and set), so a long map can be built in slices; ``--table FILE...`` prints the
markdown table of one or more such files and ``--plot PNG`` draws text held against bytes.
One torch thread by default (step counts do not depend on machine load; wall times do).
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from corpus import read_rows

SETS = {"c100": "raschka_chunks_100.csv", "t": "raschka_chunks_1000.csv"}  # in $LLMZIP_PAPER_DATA


def parse_rows(spec: str) -> list[int]:
    return [r for part in spec.split(",") for r in
            (range(int(part.split("-")[0]), int(part.split("-")[1]) + 1) if "-" in part else [int(part)])]


def chunks_of(set_spec: str, tokenizer) -> tuple[str, list[int], list[list[int]], list[int]]:
    """(set name, row numbers, token ids per row, text bytes per row)."""
    from llmzip.chunking import detokenize, text_bytes

    name, rows = set_spec.split(":")
    rows = parse_rows(rows)
    if name == "c100":
        texts, limit = read_rows(max(rows) + 1, SETS["c100"]), None
    elif name.startswith("t") and name[1:].isdigit():
        texts, limit = read_rows(max(rows) + 1, SETS["t"]), int(name[1:])
    else:
        raise SystemExit(f"unknown set {name!r}: c100 or tN")
    ids = [tokenizer(texts[r], add_special_tokens=False).input_ids[:limit] for r in rows]
    sizes = [len(text_bytes(detokenize(tokenizer, chunk))) for chunk in ids]
    return name, rows, ids, sizes


def run(args) -> None:
    import torch

    from llmzip.codec import LmzCompressor
    from llmzip.config import TrainConfig
    from llmzip.forms import IntVectorForm
    from llmzip.kinds.memory_int import CLIP, offset_for
    from llmzip.model import load_model
    from llmzip.train import MemoryTrainer, fitted_start

    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    fingerprint = loaded.identity.weights_fingerprint
    d = loaded.identity.hidden_size
    for set_spec in args.set:
        name, rows, ids, sizes = chunks_of(set_spec, loaded.tokenizer)
        for form_spec in args.forms.split(","):
            config = TrainConfig(max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr)
            coded = form_spec.startswith("coded:")
            if coded:  # the codec's own form and trainer, standalone
                bits, grid, sparsity, *rank = (float(x) for x in form_spec.split(":")[1:])
                rank, bits = int(rank[0]) if rank else d, int(bits)
                config = dataclasses.replace(config, rank=rank, bits=bits, grid=grid, sparsity=sparsity, corrections=0)
                trainer = LmzCompressor(loaded=loaded, train=config).trainer
            else:
                rank, bits = (int(x) for x in form_spec.split(":"))
                form = IntVectorForm(rank, bits, offset_for(fingerprint), d) if rank else None
                trainer = MemoryTrainer(loaded.model, config, start=fitted_start(fingerprint), form=form)
            began = time.perf_counter()

            def report(index, result):
                print(f"{name} rank {rank} bits {bits} row {rows[index]}: {len(ids[index])} tokens, steps "
                      f"{result.steps}, accepted {result.accepted}, acc {result.token_accuracy:.3f}, margin "
                      f"{result.decode_min_margin:.2f}, {len(result.payload)} B", flush=True)

            results = trainer.train(ids, on_chunk_done=report)
            record = {
                "set": name, "rows": rows, "rank": rank, "bits": bits, "lr": args.lr, "max_steps": args.max_steps,
                "batch_size": args.batch_size, "threads": args.threads, "seconds": time.perf_counter() - began,
                "train_dtype": trainer.train_dtype, "clip": CLIP.get(bits) if rank and not coded else None,
                "form": form_spec, "optimizer": trainer.config.optimizer,
                "chunks": [{"row": row, "tokens": len(chunk), "bytes": size, "accepted": r.accepted, "steps": r.steps,
                            "margin": r.decode_min_margin, "stored_bytes": len(r.payload),
                            "accuracy": r.token_accuracy}
                           for row, chunk, size, r in zip(rows, ids, sizes, results)],
            }
            print(summary_row(record), flush=True)
            if args.json:
                path = Path(args.json)
                existing = json.loads(path.read_text()) if path.exists() else []
                path.write_text(json.dumps(existing + [record], indent=1) + "\n")


def summary_row(record: dict) -> str:
    """One markdown table row: set, form, stored bytes, exact, steps, margins, text held."""
    chunks = record["chunks"]
    ok = [c for c in chunks if c["accepted"]]
    mean = lambda values: sum(values) / len(values) if values else float("nan")  # noqa: E731
    form = "fp16 (d=640)" if record["rank"] == 0 else f"k={record['rank']} int{record['bits']}"
    stored = chunks[0]["stored_bytes"]
    if record.get("form", "").startswith("coded:"):  # range coded: bytes differ by vector
        _, _, grid, sparsity, *_ = record["form"].split(":")
        form = f"coded k={record['rank']} int{record['bits']}, " + (f"grid {grid}, sparsity {sparsity}" if float(grid) else "own RMS grid")
        stored = round(mean([c["stored_bytes"] for c in (ok or chunks)]))
    elif record.get("clip"):
        form += f", clip {record['clip']}x RMS"
    elif record["rank"] and record["bits"] <= 4:
        form += ", max-scaled"
    held = sum(c["bytes"] for c in ok)
    return (f"| {record['set']} | {form} | {stored} | {8 * stored} | {len(ok)}/{len(chunks)} | "
            f"{mean([c['steps'] for c in ok]):.0f} | {min((c['margin'] for c in ok), default=float('nan')):.2f} | "
            f"{mean([c['tokens'] for c in ok]):.1f} | {mean([c['bytes'] for c in ok]):.0f} | "
            f"{(held / (stored * len(ok))) if ok else 0:.2f} | {record['seconds']:.0f} |")


HEADER = ("| set | stored form | bytes/vector | bits | exact | mean steps (exact) | min margin | tokens held | "
          "text bytes held | text bytes / stored byte | s |\n|---|---|---|---|---|---|---|---|---|---|---|")


def table(paths: list[str]) -> str:
    records = [record for path in paths for record in json.loads(Path(path).read_text())]
    return "\n".join([HEADER, *(summary_row(record) for record in records)])


def plot(paths: list[str], output: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [record for path in paths for record in json.loads(Path(path).read_text())]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for set_name in dict.fromkeys(record["set"] for record in records):
        points = sorted((r["chunks"][0]["stored_bytes"],
                         sum(c["bytes"] for c in r["chunks"] if c["accepted"]) / len(r["chunks"]))
                        for r in records if r["set"] == set_name)
        axes.plot(*zip(*points), marker="o", label=f"{set_name}")
    sizes = [r["chunks"][0]["stored_bytes"] for r in records]
    diagonal = [min(sizes) * 0.9, max(sizes) * 1.1]
    axes.plot(diagonal, diagonal, color="grey", linestyle=":", label="text = stored bytes (smaller than input above)")
    axes.set_xscale("log")
    axes.set_xlabel("stored bytes per vector")
    axes.set_ylabel("text bytes held exactly, per chunk tried")
    axes.set_title("Gemma 3 270M: bytes per vector vs text held")
    axes.legend()
    figure.tight_layout()
    figure.savefig(output, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], help="c100:ROWS or tN:ROWS (repeatable)")
    parser.add_argument("--forms", default="0:16",
                        help="comma-separated rank:bits (rank 0 = full fp16) or coded:bits:grid:sparsity")
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="default")
    parser.add_argument("--json", help="append results here")
    parser.add_argument("--table", nargs="+", help="print the markdown table of these JSON files and exit")
    parser.add_argument("--plot", help="with --table: also draw the plot to this PNG")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        if args.plot:
            plot(args.table, args.plot)
        return
    if not args.set:
        sys.exit("give at least one --set")
    run(args)


if __name__ == "__main__":
    main()
