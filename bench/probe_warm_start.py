"""Warm starts for memory-vector training (issue 14, item 2): steps from llmzip's seeded
random start against starting from the mean of vectors already converged on other rows.

    python bench/probe_warm_start.py --fit 0-11 --test 12-23 [--noise 0.1]
    python bench/probe_warm_start.py --test 0-7 --test-csv .../raschka_chunks_1000.csv --tokens 64

Trains the --fit rows from random starts (the default), takes the mean of their stored
vectors, then trains the --test rows twice: from random starts and from that mean (plus
``noise`` x embedding-RMS of the row's seeded random vector, so rows still differ).
Prints steps per row and their sums. Training dtype as llmzip's default (``auto``).
"""

import argparse
import time

import torch

from corpus import read_rows
from llmzip.model import load_model
from llmzip.train import MemoryTrainer, TrainConfig


def span(text: str) -> list[int]:
    first, last = (int(x) for x in text.split("-"))
    return list(range(first, last + 1))


def train(trainer: MemoryTrainer, chunks: list[list[int]]):
    began = time.perf_counter()
    results = trainer.train(chunks)
    return results, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", default="0-11")
    parser.add_argument("--test", default="12-23")
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--test-csv", default=None, help="test rows from this corpus [default: the fit corpus]")
    parser.add_argument("--tokens", type=int, default=None, help="test on the first TOKENS tokens of each row")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fit, test = span(args.fit), span(args.test)
    loaded = load_model("default")
    encode = lambda text: loaded.tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    fit_texts = read_rows(max(fit) + 1)
    test_texts = read_rows(max(test) + 1, args.test_csv) if args.test_csv else read_rows(max(test) + 1)
    fit_ids = {row: encode(fit_texts[row]) for row in fit}
    ids = {row: encode(test_texts[row])[: args.tokens] for row in test}
    trainer = MemoryTrainer(loaded.model, TrainConfig())
    print(f"training dtype {trainer.train_dtype}, threads {torch.get_num_threads()}")

    fitted, seconds = train(trainer, [fit_ids[row] for row in fit])
    mean = torch.stack([r.vector.float() for r in fitted if r.accepted]).mean(0)  # (d,)
    print(f"fit rows {args.fit}: steps {[r.steps for r in fitted]} (sum {sum(r.steps for r in fitted)}), "
          f"{sum(r.accepted for r in fitted)} accepted, {seconds:.0f} s; mean vector RMS "
          f"{mean.pow(2).mean().sqrt():.3f} (embedding RMS {trainer.embed_rms:.3f})")

    random_start, seconds = train(trainer, [ids[row] for row in test])
    print(f"test rows, random start: steps {[r.steps for r in random_start]} (sum "
          f"{sum(r.steps for r in random_start)}), {sum(r.accepted for r in random_start)} accepted, {seconds:.0f} s")

    seeded = trainer._start

    def from_mean(index, chunk_ids, margin):
        state = seeded(index, chunk_ids, margin)
        state.vector = mean.to(state.vector) + args.noise * state.vector  # seeded vector ~ embed_rms
        return state

    trainer._start = from_mean
    warm, seconds = train(trainer, [ids[row] for row in test])
    print(f"test rows, mean start (noise {args.noise}): steps {[r.steps for r in warm]} (sum "
          f"{sum(r.steps for r in warm)}), {sum(r.accepted for r in warm)} accepted, {seconds:.0f} s, "
          f"min decode margin {min(r.decode_min_margin for r in warm):.2f}")


if __name__ == "__main__":
    main()
