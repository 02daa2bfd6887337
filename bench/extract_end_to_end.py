"""End-to-end extract time against plain transformers decoding one chunk at a time.

    python bench/extract_end_to_end.py [ARCHIVE] [--threads N] [--json OUT]

ARCHIVE defaults to fixtures/compat/default-model.lmz (written by llmzip 0.1.0: 12 memory
chunks of 12-16 tokens and one zstd chunk). Two fresh processes each, model load and
imports included, as a user would run them:

* ``llmzip extract ARCHIVE`` (batched decoding in the archive's groups, every check);
* the README's plain-transformers example over ``llmzip export`` of the same archive:
  each vector decoded alone (batch 1, KV cache), its text compared with the input.

Prints a table and optionally writes JSON.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PLAIN = r'''
import json, sys, time, torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer
import llmzip

with safe_open(sys.argv[1], framework="pt") as f:
    vectors, rows = f.get_tensor("vectors"), json.loads(f.metadata()["llmzip.chunks"])
model_dir = llmzip.model_directory()
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
tokenizer = AutoTokenizer.from_pretrained(model_dir)
embed = model.get_input_embeddings()
bos = embed(torch.tensor([[model.config.bos_token_id]]))
source = open(sys.argv[2], "rb").read()
started, tokens = time.perf_counter(), 0
with torch.no_grad():
    for vector, row in zip(vectors, rows):
        out = model(inputs_embeds=torch.cat([bos, vector.float()[None, None]], dim=1), use_cache=True)
        ids = []
        for _ in range(row["n_tokens"]):
            ids.append(int(out.logits[0, -1].argmax()))
            out = model(input_ids=torch.tensor([[ids[-1]]]), cache=out.cache, use_cache=True)
        text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False).encode()
        assert text == source[row["offset"] : row["offset"] + row["length"]], row["chunk"]
        tokens += row["n_tokens"]
print(json.dumps({"decode_seconds": time.perf_counter() - started, "tokens": tokens}))
'''


def timed(argv: list[str], env: dict) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - began, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", nargs="?", default=str(REPO / "fixtures/compat/default-model.lmz"))
    parser.add_argument("--source", default=None, help="the archive's input [default: ARCHIVE without .lmz + .txt]")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    source = args.source or args.archive.removesuffix(".lmz") + ".txt"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    llmzip = [sys.executable, "-m", "llmzip"]
    with tempfile.TemporaryDirectory() as scratch:
        restored, vectors = Path(scratch) / "out", Path(scratch) / "v.safetensors"
        subprocess.run([*llmzip, "export", args.archive, "-o", str(vectors)], check=True, env=env)
        extract_s, _ = timed([*llmzip, "extract", args.archive, "-o", str(restored), "-q", "--threads", str(args.threads)], env)
        assert restored.read_bytes() == Path(source).read_bytes()
        plain_s, out = timed([sys.executable, "-c", PLAIN, str(vectors), source], env)
        plain = json.loads(out)
    result = {"archive": os.path.basename(args.archive), "threads": args.threads, "llmzip_extract_s": extract_s,
              "plain_transformers_s": plain_s, "plain_decode_only_s": plain["decode_seconds"],
              "memory_tokens": plain["tokens"], "speedup": plain_s / extract_s}
    print("| archive | tokens | llmzip extract (s) | plain transformers, batch 1 (s) | of which decoding (s) | speed-up |")
    print("|---|---|---|---|---|---|")
    print(f"| {result['archive']} | {plain['tokens']} | {extract_s:.1f} | {plain_s:.1f} | {plain['decode_seconds']:.1f} | "
          f"{result['speedup']:.2f}x |")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
