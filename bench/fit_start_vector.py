"""Fit the start vector llmzip ships for a model: the mean of memory vectors it trained.

    python bench/fit_start_vector.py [--rows 20-31] [--long-rows 20-27] [--tokens 64]

Trains, from llmzip's seeded random starts, the given rows of the paper's 100-character
corpus and 64-token prefixes of rows of its 1000-character corpus (rows 20 and up, so
that they are held out from the Table 2 rows 0-19 and the 64-token rows 0-19 that the
benchmarks measure), and writes the mean of the accepted vectors to
``llmzip/starts/<weights fingerprint>.safetensors`` (tensor ``start``, (d,) float32, with
the rows and steps in its metadata). Deterministic for a given machine and torch.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from corpus import CSV_100, read_rows
from llmzip.model import load_model
from llmzip.train import MemoryTrainer, TrainConfig

STARTS = Path(__file__).resolve().parent.parent / "llmzip" / "starts"


def span(text: str) -> list[int]:
    first, last = (int(x) for x in text.split("-"))
    return list(range(first, last + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--rows", default="20-31", help="rows of the 100-character corpus")
    parser.add_argument("--long-rows", default="20-27", help="rows of the 1000-character corpus, as prefixes")
    parser.add_argument("--tokens", type=int, default=64, help="prefix length of the long rows")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)

    def encode(text: str) -> list[int]:
        return loaded.tokenizer(text, add_special_tokens=False).input_ids

    short, long = span(args.rows), span(args.long_rows)
    texts = read_rows(max(short) + 1, CSV_100)
    long_texts = read_rows(max(long) + 1, "raschka_chunks_1000.csv")
    chunks = [encode(texts[r]) for r in short] + [encode(long_texts[r])[: args.tokens] for r in long]
    trainer = MemoryTrainer(loaded.model, TrainConfig(start="random"))
    began = time.perf_counter()
    results = trainer.train(chunks)
    accepted = [r.vector.float() for r in results if r.accepted]
    start = torch.stack(accepted).mean(0)  # (d,)
    STARTS.mkdir(exist_ok=True)
    path = STARTS / f"{loaded.identity.weights_fingerprint}.safetensors"
    metadata = {
        "fitted_by": "bench/fit_start_vector.py",
        "rows_100": args.rows, "rows_1000_prefixes": args.long_rows, "prefix_tokens": str(args.tokens),
        "accepted": str(len(accepted)), "of": str(len(results)), "train_dtype": trainer.train_dtype,
        "steps": json.dumps([r.steps for r in results]),
    }
    save_file({"start": start.contiguous()}, path, metadata=metadata)
    print(f"{path}: mean of {len(accepted)}/{len(results)} vectors, RMS {start.pow(2).mean().sqrt():.3f}, "
          f"steps {[r.steps for r in results]}, {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
