"""Which torch thread count compress and extract should default to (issue 32, item 2).

On an idle machine torch's own choice (every physical core) is fastest; on a machine where
another process keeps a core busy, OpenMP's threads wait for each other at every barrier,
and a 49-byte compress took 41.6 s at two threads against 3.2 s at one (the issue's 2-core
machine). This script times the same small compress and extract through the API
(``LmzCompressor(threads=...)``, ``LmzDecompressor(threads=...)``: what the CLI's
``--threads`` sets) at each thread count, idle and beside CPU-burning competitor
processes, and writes every run to JSON, so the default is chosen from numbers:

    python bench/threads.py --json bench/results/threads.json

The default input is ``fixtures/sample.txt`` (106 B, one memory vector with the default
model). A quick check that the script works, with the fixture model on a few bytes:

    python bench/threads.py --model fixtures/tiny-gemma3 --text "Hello there, small world." \
        --repeats 1 --json /tmp/threads.json

Run it on an otherwise quiet machine: the "idle" rows are only idle if nothing else runs.
Each competitor is a separate Python process spinning one core at normal priority (what
another user's job looks like); they are started before and stopped after each busy block.
"""

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPIN = "while True: pass"  # one competitor: one core kept busy in its own process


def thread_counts(spec: str) -> list[int]:
    """``1,all``-style list: integers, ``all`` (every CPU this process may run on) or
    ``torch`` (torch's own default here: the physical cores, or $OMP_NUM_THREADS)."""
    import torch

    named = {"all": len(os.sched_getaffinity(0)), "torch": torch.get_num_threads()}
    counts = []
    for part in spec.split(","):
        count = named[part] if part in named else int(part)
        if count < 1:
            raise SystemExit(f"--threads: {part!r} is not a thread count of at least 1")
        if count not in counts:
            counts.append(count)
    return counts


class Competitors:
    """``count`` processes that each spin one core until the block ends."""

    def __init__(self, count: int):
        self.count = count
        self.processes = []

    def __enter__(self):
        self.processes = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(self.count)]
        time.sleep(0.5)  # let the scheduler see them before the first timed run
        return self

    def __exit__(self, *exc):
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait()


def one_run(loaded, data: bytes, threads: int, codec_name: str) -> dict:
    """Compress then extract ``data`` at ``threads``; seconds of each, archive size, exact."""
    from llmzip import codec

    compressor = codec.LmzCompressor(loaded=loaded, threads=threads, codec=codec_name)
    started = time.perf_counter()
    archive, report = compressor.compress_with_report(data)
    compressed = time.perf_counter()
    restored = codec.LmzDecompressor(loaded=loaded, threads=threads).decompress(archive)
    extracted = time.perf_counter()
    if restored != data:
        raise SystemExit(f"threads {threads}: extract did not restore the input")
    return {"compress_s": round(compressed - started, 3), "extract_s": round(extracted - compressed, 3),
            "archive_bytes": len(archive), "memory_chunks": report.memory_chunks, "lm_chunks": report.lm_chunks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="model spec (default: Gemma 3 270M)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", type=Path, default=ROOT / "fixtures" / "sample.txt", help="input file")
    source.add_argument("--text", help="input text instead of a file")
    parser.add_argument("--codec", default="memory", help="memory (the CLI's default), lm or auto")
    parser.add_argument("--threads", default="1,all,torch", help="thread counts: integers, all, torch")
    parser.add_argument("--competitors", type=int, default=1, help="CPU-burning processes in the busy rows")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per thread count and load")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "threads.json")
    args = parser.parse_args()

    import torch

    from llmzip import __version__
    from llmzip.model import load_model

    data = args.text.encode() if args.text is not None else args.input.read_bytes()
    counts = thread_counts(args.threads)
    began = time.perf_counter()
    loaded = load_model(args.model)
    load_s = time.perf_counter() - began
    one_run(loaded, data, counts[0], args.codec)  # warm-up: first-call costs stay out of the timings
    rows = []
    for load, competitors in (("idle", 0), ("busy", args.competitors)):
        with Competitors(competitors):
            for threads in counts:
                runs = [one_run(loaded, data, threads, args.codec) for _ in range(args.repeats)]
                row = {"load": load, "competitors": competitors, "threads": threads, "runs": runs,
                       "median_compress_s": statistics.median(run["compress_s"] for run in runs),
                       "median_extract_s": statistics.median(run["extract_s"] for run in runs)}
                rows.append(row)
                print(f"{load:4} threads {threads}: compress {row['median_compress_s']:.2f} s, "
                      f"extract {row['median_extract_s']:.2f} s (median of {len(runs)})", file=sys.stderr)
    result = {
        "command": shlex.join(["python", "bench/threads.py", *sys.argv[1:]]),
        "llmzip": __version__,
        "torch": torch.__version__,
        "machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                    "torch_default_threads": torch.get_num_threads(), "processor": platform.processor(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "model": args.model, "codec": args.codec, "input_bytes": len(data), "model_load_s": round(load_s, 2),
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
