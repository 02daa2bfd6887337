"""LM coding at the speed of the model? ``llmzip compress --codec lm`` and ``llmzip extract``
end to end, against plain transformers loading the same model and running the same
tokens through it, in the same run.

    python bench/lm_speed.py TEXT... [--threads 2] [--chunk-tokens N] [--json OUT]
    python bench/lm_speed.py /tmp/en16k.txt en es --json bench/results/lm_speed.json
    python bench/lm_speed.py en --bytes 16384 --extract-env avx2 --extract-env default
    PYTHONPATH=/tmp/base python bench/lm_speed.py /tmp/en16k.txt --repeat 2   # another commit's llmzip
    python bench/lm_speed.py /tmp/en16k.txt --threads 1 --workers 2          # also on 2 Ray workers

TEXT is a file, or ``en`` / ``es``: the paper's English article and Spanish pages, rows
joined as bench/lm_coding.py joins them (whole, or the first ``--bytes``; needs
``$LLMZIP_PAPER_DATA``). Each measurement is a fresh process, imports and model load
included, as a user runs it:

* *plain*: transformers loads the converted default model (fp32, sdpa) and runs the text's
  tokens through it, one teacher-forced pass per window of ``--chunk-tokens`` tokens after
  BOS (the work LM coding cannot avoid: every token's distribution);
* *compress*: ``llmzip compress --codec lm``; *extract*: ``llmzip extract``, compared byte
  for byte with the input; ``--extract-env`` adds an extract under another machine's
  kernels (``avx2``: AVX2-only ATen, oneDNN and MKL; ``default``: ATen's scalar code);
* with ``--workers N``, compress and extract again with ``--workers N`` (a local Ray
  instance, its start included; ``--threads`` in each worker), extract byte-exact, and
  whether the archive is the single-process one (it must be: same threads, same kernels).

Prints one JSON row per text (seconds, x plain, bytes/s, archive against ``xz -9e`` and
``zstd -19``) and writes them all with ``--json``.
"""

import argparse
import json
import lzma
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

from corpus import corpus_path

PLAIN = r'''
import sys, time
t0 = time.perf_counter()
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
import llmzip
torch.set_num_threads(int(sys.argv[3]))
directory = llmzip.model_directory()
model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="sdpa").eval()
tokenizer = AutoTokenizer.from_pretrained(directory)
loaded = time.perf_counter()
ids = tokenizer.encode(open(sys.argv[1], encoding="utf-8").read(), add_special_tokens=False)
window = int(sys.argv[2])
with torch.no_grad():
    for start in range(0, len(ids), window):
        model(input_ids=torch.tensor([[model.config.bos_token_id] + ids[start : start + window - 1]]))
done = time.perf_counter()
print(len(ids), loaded - t0, done - loaded)
'''

KERNELS = {  # another machine's arithmetic on this one (docs/DESIGN.md, invariant 8)
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
}


def paper_text(key: str, size: int) -> bytes:
    """The paper's corpus ``key`` as bench/lm_coding.py joins it (whole rows up to ``size`` bytes)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lm_coding import first_bytes

    return first_bytes(corpus_path({"en": "raschka_chunks_1000.csv", "es": "chunks.csv"}[key]), size)


def timed(command: list, env: dict | None = None) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode:
        sys.exit(f"bench: {' '.join(map(str, command))} failed:\n{done.stderr}")
    return time.perf_counter() - began, done.stdout


def measure(name: str, data: bytes, args, work: Path) -> dict:
    source = work / "text.txt"
    source.write_bytes(data)
    archive, restored = work / "text.lmz", work / "restored.txt"
    llmzip = [sys.executable, "-m", "llmzip"]
    threads = ["--threads", str(args.threads)]
    plain_s, out = timed([sys.executable, "-c", PLAIN, source, str(args.chunk_tokens), str(args.threads)])
    tokens, load_s, prefill_s = out.split()
    budget = ["--chunk-tokens", str(args.chunk_tokens)]

    def compress(to: Path, extra: list) -> float:
        seconds, _ = timed(llmzip + ["compress", source, "-o", to, "--codec", "lm", "-f", "-q", "--no-progress"]
                           + threads + budget + extra)
        return seconds

    def extract(what: Path, extra: list, how: str, env: dict | None = None) -> float:
        seconds, _ = timed(llmzip + ["extract", what, "-o", restored, "-f", "-q", "--no-progress"] + threads + extra, env)
        if restored.read_bytes() != data:
            sys.exit(f"bench: {name}: extract{how} is not byte-exact")
        return seconds

    compress_s = compress(archive, [])
    row = {"text": name, "bytes": len(data), "tokens": int(tokens), "threads": args.threads,
           "chunk_tokens": args.chunk_tokens, "plain_s": round(plain_s, 1), "plain_load_s": round(float(load_s), 1),
           "plain_prefill_s": round(float(prefill_s), 1), "compress_s": round(compress_s, 1)}
    for kernels in [None] + args.extract_env:
        extract_s = extract(archive, [], f" under {kernels}" if kernels else "", KERNELS.get(kernels))
        row["extract_s" if kernels is None else f"extract_{kernels}_s"] = round(extract_s, 1)
    if args.workers:
        workers = ["--workers", str(args.workers)]
        on_workers = work / "workers.lmz"
        row["workers"] = args.workers
        row["compress_workers_s"] = round(compress(on_workers, workers), 1)
        row["extract_workers_s"] = round(extract(on_workers, workers, " with --workers"), 1)
        row["workers_archive_identical"] = on_workers.read_bytes() == archive.read_bytes()
    size = archive.stat().st_size
    xz = len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
    row.update({
        "compress_x_plain": round(compress_s / plain_s, 2), "extract_x_plain": round(row["extract_s"] / plain_s, 2),
        "compress_B_per_s": round(len(data) / compress_s), "extract_B_per_s": round(len(data) / row["extract_s"]),
        "archive_bytes": size, "xz_9e_bytes": xz, "zstd_19_bytes": len(zstandard.ZstdCompressor(level=19).compress(data)),
        "vs_xz": round(size / xz, 3),
    })
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("texts", nargs="+", help="files, or en / es (the paper's corpora)")
    parser.add_argument("--bytes", type=int, default=0, help="first bytes of en / es (0: whole)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk-tokens", type=int, default=1024, help="compress's chunk budget and plain's window")
    parser.add_argument("--extract-env", action="append", default=[], choices=sorted(KERNELS),
                        help="also extract under another machine's kernels (repeatable)")
    parser.add_argument("--workers", type=int, default=0, help="also compress and extract on N Ray workers")
    parser.add_argument("--repeat", type=int, default=1, help="measure each text this many times, one after the other")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for text in args.texts:
            data = paper_text(text, args.bytes or 1 << 30) if text in ("en", "es") else Path(text).read_bytes()
            for _ in range(args.repeat):  # the machine's speed drifts: repeats show by how much
                rows.append(measure(text if text in ("en", "es") else Path(text).name, data, args, Path(work)))
                print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
