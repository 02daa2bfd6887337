"""How far the lm decoder's logits drift from the writer's: the numbers behind kind lm's
tolerance (format/CODEC.md; BENCHMARKS.md, "LM coding: drift").

    python bench/lm_drift.py TEXT [--threads 1] [--every 32] [--group 256] [--save A.pt] [--against B.pt]

Codes nothing: runs TEXT's tokens, in chunks of the lm budget (as ``--codec lm`` cuts them),
through the writer's teacher-forced pass (``lm.teacher_forced``) and through the decoder's
KV-cache steps (``lm.run_batch``, all chunks as rows of one batch, as extract runs them;
``--group`` decodes them in smaller groups, e.g. 1 for each chunk alone),
keeps all logits at every ``--every``-th position of each chunk, and prints the largest
difference, its 99.99th percentile and the share of logits that differ. ``--save`` writes
both sets, ``--against`` also compares this run's with a saved run's, e.g. one made under
other kernels (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2``).
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from llmzip import chunking
from llmzip.kinds import lm
from llmzip.model import load_model


def logits_at(loaded, token_lists: list, every: int, group: int) -> tuple[dict, dict]:
    """{(chunk, position): (V,) logits} of the writer's pass and of the decoder's steps,
    the chunks decoded in consecutive groups of ``group`` rows."""
    steps = {}
    for first in range(0, len(token_lists), group):
        def pick(step, rows, logits):
            if step % every == 0:
                for j, i in enumerate(rows):
                    steps[first + i, step] = logits[j].clone()
            return [token_lists[first + i][step] for i in rows]

        lm.run_batch(loaded.model, [len(ids) for ids in token_lists[first : first + group]], pick)
    passes = {owner: row.clone() for owners, logits in lm.teacher_forced(loaded.model, token_lists)
              for owner, row in zip(owners, logits) if owner[1] % every == 0}
    return passes, steps


def compare(a: dict, b: dict) -> dict:
    diffs = torch.stack([(a[key] - b[key]).abs() for key in sorted(a)])  # (P, V)
    return {"max": float(diffs.max()), "p99.99": float(torch.quantile(diffs.flatten()[::97], 0.9999)),
            "share_differ": round(float((diffs > 0).float().mean()), 3), "positions": diffs.shape[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--every", type=int, default=32)
    parser.add_argument("--group", type=int, default=256, help="decode the chunks in groups of this many rows "
                        "(256, the default decode group: all of a 16 KB text's chunks in one batch; 1: each alone)")
    parser.add_argument("--save")
    parser.add_argument("--against")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model()
    data = Path(args.text).read_bytes()
    token_lists = [list(chunk.token_ids) for chunk in chunking.split(data, loaded.tokenizer, max_tokens=lm.LM_CHUNK_TOKENS)
                   if chunk.token_ids]
    with torch.no_grad():
        passes, steps = logits_at(loaded, token_lists, args.every, args.group)
    rows = {"pass vs steps": compare(passes, steps)}
    if args.against:
        saved = torch.load(args.against)
        rows["pass vs saved pass"] = compare(passes, saved["passes"])
        rows["steps vs saved steps"] = compare(steps, saved["steps"])
        rows["pass vs saved steps"] = compare(passes, saved["steps"])
        rows["saved pass vs steps"] = compare(saved["passes"], steps)
    if args.save:
        torch.save({"passes": passes, "steps": steps}, args.save)
    json.dump(rows, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
