"""Scratch (attempt 19): replay give-up rules on recorded step traces. For each chunk of
each trace, feed its per-step loss ("settled" where the trace has it: the loss without the
positions a correcting form may leave wrong) to the trainer's own rule
(llmzip.train._Training.hopeless, the power law) and to the exponential rule it replaced,
at the default window (100) and budget (1500) and the given giveup_loss (default 1.0),
and print where each would have stopped the chunk and where the chunk really ended.

    python results/steps_issue14b/replay_giveup.py [--giveup-loss X] TRACE.jsonl[.gz] ...
"""
import argparse
import collections
import gzip
import json
import math

import torch

from llmzip.config import TrainConfig
from llmzip.train import _Training

WINDOW, BUDGET = TrainConfig.giveup_window, TrainConfig.max_steps
parser = argparse.ArgumentParser()
parser.add_argument("--giveup-loss", type=float, default=TrainConfig.giveup_loss)
parser.add_argument("traces", nargs="+")
args = parser.parse_args()
STOP = args.giveup_loss


class Exponential(_Training):
    """The rule before attempt 19: the last window's log-rate, held to the budget."""

    def hopeless(self, loss, window, stop_loss):
        self.best_in_window = min(self.best_in_window, loss)
        if self.steps == 0 or self.steps % window:
            return False
        before, recent = self.best_before, self.best_in_window
        self.best_before, self.best_in_window = min(before, recent), float("inf")
        if self.steps < 2 * window or recent <= stop_loss:
            return False
        rate = math.log(before / recent) / window if recent < before else 0.0
        return recent * math.exp(-rate * max(0, self.budget - self.steps)) > stop_loss


def first_stop(kind, curve):
    chunk = kind(0, torch.tensor([1]), torch.zeros(1), 0.5, budget=BUDGET)
    for step, loss in curve:
        chunk.steps = step
        if chunk.hopeless(loss, WINDOW, STOP):
            return step
    return None


for path in args.traces:
    curves = collections.defaultdict(list)
    for line in (gzip.open if path.endswith(".gz") else open)(path, "rt"):
        record = json.loads(line)
        curves[record["row"]].append((record["step"], record.get("settled", record["loss"])))
    for row, curve in curves.items():
        power, exponential = first_stop(_Training, curve), first_stop(Exponential, curve)
        print(f"{path.split('/')[-1]} {row}: ended at step {curve[-1][0]}, power law stops at {power}, "
              f"exponential at {exponential}")
