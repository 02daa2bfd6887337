"""``x @ W.T`` (``F.linear``) against ``(W @ x.T).T`` (llmzip's weight-major linears,
:func:`llmzip.model.weight_major_linears`) at the default model's shapes, fp32 on the CPU.

    python bench/linear_order.py [--threads 2] [--rows 1,2,5,8,16,32,64,128,512] [--json OUT]

For each row count M: the (262,144 x 640) head once, and the body's 126 linears (18 layers
of q, k, v, o, gate, up, down), each with its own weights so that they come from memory as
in a decode step. Random weights at the model's shapes (the arithmetic does not depend on
their values); milliseconds per call, the best of ``--repeat``, and the largest difference
between the two orders' outputs.
"""

import argparse
import json
from pathlib import Path

import torch

from extract_throughput import best_of
from llmzip.model import weight_major_linears

HEAD = (262144, 640)
LAYER = [(1024, 640), (256, 640), (256, 640), (640, 1024), (2048, 640), (2048, 640), (640, 2048)]  # q k v o gate up down


def linears(shapes: list, generator) -> torch.nn.ModuleList:
    """Bias-free (out, in) linears with random weights, made weight-major as ``load_model`` makes them."""
    modules = torch.nn.ModuleList(torch.nn.Linear(k, n, bias=False) for n, k in shapes).requires_grad_(False)
    for module in modules:
        module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.05)
    weight_major_linears(modules)
    return modules


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", default="1,2,5,8,16,32,64,128,512")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    (head,), body = linears([HEAD], generator), linears(LAYER * 18, generator)
    rows = []
    for m in map(int, args.rows.split(",")):
        x = {k: torch.randn(m, k, generator=generator) for k in (640, 1024, 2048)}
        plain = lambda module: torch.nn.functional.linear(x[module.in_features], module.weight)  # noqa: E731
        ours = lambda module: module(x[module.in_features])  # noqa: E731
        row = {"rows": m, "threads": args.threads,
               "head_linear_ms": round(1000 * best_of(lambda: plain(head), args.repeat), 1),
               "head_weight_major_ms": round(1000 * best_of(lambda: ours(head), args.repeat), 1),
               "body_linear_ms": round(1000 * best_of(lambda: [plain(w) for w in body], args.repeat), 1),
               "body_weight_major_ms": round(1000 * best_of(lambda: [ours(w) for w in body], args.repeat), 1),
               "head_max_difference": float((plain(head) - ours(head)).abs().max())}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
