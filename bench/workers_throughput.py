"""Compress throughput with Ray workers: the same files with no workers, --workers 1 and
--workers 2, each arm a fresh `llmzip compress FILE...` process, timed end to end (model
load, Ray start, training, verification, writing). Every arm must write byte-identical
archives (checked). Each arm uses one torch thread per process.

    python bench/workers_throughput.py --files 4 --json bench/results/workers_throughput.json

The default workload is the tiny test model (fixtures/tiny-gemma3) on unseen sentences, so
every chunk trains to --max-steps: the mechanics and the overheads, not the default
model's speed (BENCHMARKS.md, "Scale out", projects that from the step profile).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def make_files(directory: Path, files: int, sentences: int) -> list[Path]:
    paths = []
    for number in range(files):
        text = " ".join(f"Unseen sentence {number}.{i} about lanterns, rivers and glass." for i in range(sentences))
        path = directory / f"doc{number}.txt"
        path.write_text(text + "\n")
        paths.append(path)
    return paths


def run_arm(paths, workers, args) -> dict:
    command = [sys.executable, "-m", "llmzip", "compress", *map(str, paths), "-f", "-v", "--no-progress",
               "--model", args.model, "--threads", "1", "--chunk-tokens", str(args.chunk_tokens),
               "--max-steps", str(args.max_steps), "--batch-size", str(args.batch_size), "--device", args.device]
    if workers:
        command += ["--workers", str(workers)]
    began = time.perf_counter()
    done = subprocess.run(command, check=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True)
    seconds = time.perf_counter() - began
    # -v: "loaded in X s" is the driver's model load plus, with workers, Ray's start and
    # the workers' model loads (they overlap the driver's load only in part).
    loaded = float(re.search(r"loaded in ([0-9.]+) s", done.stderr).group(1))
    archives = [Path(str(path) + ".lmz").read_bytes() for path in paths]
    return {"workers": workers, "seconds": round(seconds, 2), "start_seconds": loaded, "archives": archives,
            "chunks": sum(int(n) for n in re.findall(r": ([0-9]+) chunks", done.stderr))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "fixtures" / "tiny-gemma3"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--sentences", type=int, default=3, help="sentences per file")
    parser.add_argument("--chunk-tokens", type=int, default=16)
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--arms", default="0,1,2", help="worker counts; 0 = no --workers (one process)")
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        paths = make_files(Path(scratch), args.files, args.sentences)
        results = []
        for workers in (int(arm) for arm in args.arms.split(",")):
            result = run_arm(paths, workers, args)
            results.append(result)
            print(f"workers {workers or '-'}: {result['seconds']:.1f} s end to end, of which {result['start_seconds']:.1f} s "
                  f"model load and Ray start; {result['chunks']} chunks; load average {os.getloadavg()[0]:.2f}", flush=True)
    identical = all(r["archives"] == results[0]["archives"] for r in results)
    print(f"archives identical across arms: {identical}")
    base = next((r for r in results if not r["workers"]), None)
    for r in results:
        if base is not None and r["workers"]:
            print(f"{r['workers']} workers against one process: {base['seconds'] / r['seconds']:.2f}x end to end, "
                  f"{(base['seconds'] - base['start_seconds']) / (r['seconds'] - r['start_seconds']):.2f}x after the start")
    if args.json:
        document = {"settings": {k: v for k, v in vars(args).items() if k != "json"}, "identical": identical,
                    "cpus": os.cpu_count(), "load_average_after": os.getloadavg(), "runs": [{k: v for k, v in r.items() if k != "archives"} for r in results]}
        Path(args.json).write_text(json.dumps(document, indent=1) + "\n")
    if not identical:
        sys.exit(1)


if __name__ == "__main__":
    main()
