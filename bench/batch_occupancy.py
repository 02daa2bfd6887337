"""Mean occupied batch slots when chunks train in fixed groups, from measured step counts.

The codec trains eligible chunks in fixed groups (so that a resumed run trains every chunk
with the same batch mates); inside a group, continuous batching hands a finished chunk's
slot to the next waiting one (:mod:`llmzip.train`). Given each chunk's steps, that
schedule is fixed, so this replays it: for groups of 1, 2, 4, ... batches it reports the
batched steps run and the mean share of the ``batch`` slots that held a chunk. Step counts
come from probe logs (``bench/probe_setting.py``: lines ``row R: steps S ...``) or a list.

    python bench/batch_occupancy.py --log bench/results/steps/table2_rprop_fp32.log --batch 8

The step counts are measured; the occupancy is computed from them (a chunk's steps under
other batch mates differ in the last bits of its path, not in kind).
"""

import argparse
import re


def batched_steps(steps: list[int], batch: int) -> int:
    """Batched steps to train chunks needing ``steps`` each, in order, ``batch`` at a time
    with continuous batching (a slot goes to the next chunk as soon as one finishes)."""
    remaining = []  # steps left for each chunk in the batch
    waiting = list(steps)
    total = 0
    while waiting or remaining:
        while waiting and len(remaining) < batch:
            remaining.append(waiting.pop(0))
        run = min(remaining)  # nothing changes until the next chunk finishes
        total += run
        remaining = [left - run for left in remaining if left > run]
    return total


def occupancy(steps: list[int], batch: int, group_batches: int) -> tuple[int, float]:
    """(batched steps, mean occupied share of the slots) for fixed groups of
    ``batch * group_batches`` chunks trained one group after another."""
    size = batch * group_batches
    groups = [steps[start : start + size] for start in range(0, len(steps), size)]
    total = sum(batched_steps(group, batch) for group in groups)
    return total, sum(steps) / (total * batch)


def steps_from_log(path: str) -> list[int]:
    """Each row's steps from a probe log, in row order."""
    found = {int(m[1]): int(m[2]) for m in re.finditer(r"^row (\d+): steps (\d+)", open(path).read(), re.M)}
    return [found[row] for row in sorted(found)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--log", help="a bench/probe_setting.py log")
    source.add_argument("--steps", help="comma-separated steps per chunk, in order")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--groups", default="1,2,4,8", help="group sizes to compare, in batches")
    args = parser.parse_args()
    steps = steps_from_log(args.log) if args.log else [int(s) for s in args.steps.split(",")]
    print(f"{len(steps)} chunks, {sum(steps)} chunk-steps, batch {args.batch}")
    print("| group (batches) | batched steps | mean occupied slots |")
    print("|---|---|---|")
    for group_batches in (int(g) for g in args.groups.split(",")):
        total, share = occupancy(steps, args.batch, group_batches)
        print(f"| {group_batches} ({group_batches * args.batch} chunks) | {total} | {share:.0%} |")


if __name__ == "__main__":
    main()
