"""Extract throughput: batched greedy decoding (decode_batch) against batch 1 (decode).

Decodes the memory chunks of a real archive with :func:`llmzip.decode.decode_batch` in
consecutive batches of each size in ``--batch-sizes``, in one process. Each batch size
decodes ``max(--chunks, B)`` chunks rounded up to whole batches: the archive's memory
chunks repeated cyclically (the output says how many distinct ones there are). Batch 1
(:func:`llmzip.decode.decode`) is timed on the distinct chunks, each once, and is the
reference: every batched decode must give the same token ids, and those ids must restore
each chunk's bytes (its checksum, as extract checks it). Then it measures what bounds the
numbers: the CPU's fp32 matmul throughput on the vocabulary projection's shape
((B, 640) x (640, 262144)), the memory bandwidth that bounds batch 1 (every token reads
every weight), and one batched step split into its parts (the 262k-row output
projection, the layers and the rest, choosing the token and its top-1/top-2 gap).

    python bench/extract_throughput.py fixtures/compat/default-model.lmz --chunks 64 \\
        --batch-sizes 1,8,16,32,64,128,256,512 --threads 1 --json bench/results/extract_throughput_cpu.json

``--random K`` uses K random fp16 vectors scaled like embeddings instead of an archive
(decode speed does not depend on the vector), for development only.
"""

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from llmzip.bench import machine
from llmzip.chunking import detokenize, text_bytes
from llmzip.container import chunk_check, unpack
from llmzip.decode import _pick_, decode, decode_batch, prompt_embeddings, top2_gap
from llmzip.identity import recorded_identity
from llmzip.kinds.memory import MemoryChunk
from llmzip.model import load_model


def archive_chunks(path: Path, loaded) -> tuple[list[torch.Tensor], list[int], list, dict]:
    """The archive's memory chunks: (d,) fp16 vectors, token counts, (checksum, format
    version) pairs, and facts."""
    data = path.read_bytes()
    archive = unpack(data)
    expected = recorded_identity(archive.version, archive.header)
    found = loaded.identity_for(expected.fingerprint_version).weights_fingerprint
    if found != expected.weights_fingerprint:
        raise SystemExit(f"{path} was made with weights {expected.weights_fingerprint}, the loaded model has {found}")
    memory = [c for c in archive.chunks if isinstance(c, MemoryChunk)]
    vectors = [torch.from_numpy(np.frombuffer(c.vector, dtype="<f2").astype(np.float16)) for c in memory]
    facts = {
        "archive": str(path),
        "archive_sha256": hashlib.sha256(data).hexdigest(),
        "archive_creator": archive.header.metadata.get("creator"),
        "chunk_tokens_setting": archive.header.settings.get("chunk_tokens"),
        "chunks_in_archive": len(archive.chunks),
        "memory_chunks_in_archive": len(memory),
        "compress_time_min_margins": [c.min_margin for c in memory],
    }
    return vectors, [c.n_tokens for c in memory], [(c.check, archive.version) for c in memory], facts


def random_chunks(model, k: int, n_tokens: int) -> tuple[list[torch.Tensor], list[int], list, dict]:
    embed = model.get_input_embeddings()
    ids = torch.arange(0, embed.weight.shape[0], max(1, embed.weight.shape[0] // 4096))
    rms = embed(ids).pow(2).mean().sqrt()
    generator = torch.Generator().manual_seed(13)
    vectors = [(torch.randn(embed.weight.shape[1], generator=generator) * rms).half() for _ in range(k)]
    return vectors, [n_tokens] * k, [None] * k, {"archive": None, "random_vectors": k}


def cpu() -> dict:
    """The CPU's model name and the vector extensions that matter for fp32 matmuls
    (``llmzip.bench.machine()`` records only the architecture on Linux)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), None)
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return {"model_name": name, "flags": [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]}


def restores(tokenizer, token_ids, check) -> bool:
    """Whether ``token_ids`` give the chunk's bytes, by its recorded checksum (``check``: a
    (checksum, format version) pair, or None for random vectors), as extract checks it."""
    if check is None:
        return True
    value, version = check
    return chunk_check(text_bytes(detokenize(tokenizer, list(token_ids))), version) == value


def best_of(fn, repeats: int = 3) -> float:
    """Smallest wall time of ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.no_grad()
def limits(model, batch_sizes: list[int]) -> dict:
    """What the hardware allows: fp32 GFLOP/s of the vocabulary projection per batch size,
    the bandwidth that one row (a GEMV: weights read once, 2 flops each) reaches, and the
    tokens/s bounds they give for a whole decode step."""
    head = model.get_output_embeddings().weight  # (V, d)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    weights = {id(m.weight): m.weight for m in linears}  # lm_head is tied to the embedding: count it once
    weight_bytes = sum(w.numel() * w.element_size() for w in weights.values())
    flops_per_token = sum(2 * m.weight.numel() for m in linears)  # attention scores not counted: 0.25% at 18 positions
    out = {"head_shape": list(head.shape), "weight_bytes": weight_bytes, "flops_per_token": flops_per_token, "matmul": []}
    for b in sorted(set(batch_sizes)):
        x = torch.randn(b, head.shape[1])  # (B, d)
        seconds = best_of(lambda: F.linear(x, head))
        row = {"batch": b, "seconds": seconds, "gflops": 2 * b * head.numel() / seconds / 1e9}
        if b == 1:
            row["gb_per_s"] = head.numel() * head.element_size() / seconds / 1e9
            out["batch1_bound_tokens_per_s"] = row["gb_per_s"] * 1e9 / weight_bytes
        row["bound_tokens_per_s"] = row["gflops"] * 1e9 / flops_per_token
        out["matmul"].append(row)
    return out


@torch.no_grad()
def profile_step(model, vectors: torch.Tensor, n_steps: int = 4) -> dict:
    """One cached decode step for B rows, split: the whole model call, the output
    projection with its softcap alone, and choosing the token and its top-1/top-2 gap
    (decode_batch's max + amax, and argmax + topk(2) as decode did before)."""
    b = vectors.shape[0]
    dtype = model.get_input_embeddings().weight.dtype
    out = model(inputs_embeds=prompt_embeddings(model, vectors.to(dtype)), use_cache=True, logits_to_keep=1)
    ids = out.logits[:, -1].argmax(-1)[:, None]  # (B, 1)
    cache = out.cache
    step_times = []
    for _ in range(n_steps):
        start = time.perf_counter()
        out = model(input_ids=ids, cache=cache, use_cache=True)
        step_times.append(time.perf_counter() - start)
        cache = out.cache
    step = min(step_times[1:])
    hidden = torch.randn(b, 1, model.config.hidden_size)  # (B, 1, d)
    softcap = model.config.final_logit_softcapping

    def head():
        logits = model.lm_head(hidden)
        return torch.tanh(logits / softcap) * softcap if softcap else logits

    head_s = best_of(head)
    logits = head()[:, -1].float()  # (B, V)
    argmax_top2_s = best_of(lambda: (logits.argmax(-1), top2_gap(logits)))
    pick_s = best_of(lambda: _pick_(logits.clone())) - best_of(lambda: logits.clone())
    return {
        "batch": b,
        "step_s": step,
        "output_projection_s": head_s,
        "layers_and_rest_s": step - head_s,
        "pick_s": pick_s,  # max + amax, as decode_batch does
        "argmax_top2_s": argmax_top2_s,  # argmax + topk(2), as decode did before
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", nargs="?", type=Path, help=".lmz made with the default model")
    parser.add_argument("--random", type=int, default=0, metavar="K", help="K random vectors instead of an archive")
    parser.add_argument("--tokens", type=int, default=16, help="tokens per random vector")
    parser.add_argument("--model", default="default")
    parser.add_argument("--chunks", type=int, default=32, help="decode at least this many chunks (and whole batches) per batch size")
    parser.add_argument("--batch-sizes", default="1,8,16,32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if (args.archive is None) == (args.random == 0):
        parser.error("give an archive or --random K")
    torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    start = time.perf_counter()
    loaded = load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    load_s = time.perf_counter() - start
    if args.archive is not None:
        vectors, counts, sums, source = archive_chunks(args.archive, loaded)
    else:
        vectors, counts, sums, source = random_chunks(model, args.random, args.tokens)
    k = len(vectors)
    print(
        f"{k} distinct memory chunks ({sum(counts)} tokens, {min(counts)}-{max(counts)} each); model loaded in "
        f"{load_s:.1f} s; torch threads {torch.get_num_threads()}",
        flush=True,
    )
    decode(model, vectors[0], 2)  # warm-up: first-call allocations

    # Batch 1 on each distinct chunk: the reference ids and the batch-1 speed, timed
    # before and after the batched runs (the machine is shared; the faster is the baseline).
    def batch1(when: str) -> tuple[list, dict]:
        start = time.perf_counter()
        results = [decode(model, v, n) for v, n in zip(vectors, counts)]
        seconds = time.perf_counter() - start
        restored = [restores(tokenizer, r.token_ids, s) for r, s in zip(results, sums)]
        row = {
            "batch": 1,
            "when": when,
            "chunks": k,
            "tokens": sum(counts),
            "seconds": seconds,
            "tokens_per_s": sum(counts) / seconds,
            "ids_equal_batch1": True,
            "bytes_restored": all(restored),
            "min_margin": min(r.min_margin for r in results),
            "max_margin_drift": 0.0,
            "load_average_after": os.getloadavg()[0],
        }
        print(f"batch 1 ({when}): {k} chunks in {seconds:.1f} s, {row['tokens_per_s']:.2f} tokens/s, bytes restored: {all(restored)}", flush=True)
        return results, row

    reference, first = batch1("first")
    rows = [first]
    recorded = source.get("compress_time_min_margins")
    if recorded:
        same = [r.min_margin == m for r, m in zip(reference, recorded)]
        print(f"batch-1 margins equal to the archive's compress-time margins, bit for bit: {sum(same)}/{k}", flush=True)
        source["batch1_margins_equal_recorded"] = sum(same)

    # Each batch size decodes max(--chunks, B) chunks, rounded up to whole batches: the
    # distinct chunks repeated cyclically, so every row is checked against batch 1.
    for b in [b for b in batch_sizes if b > 1]:
        order = [i % k for i in range(-(-max(args.chunks, b) // b) * b)]
        n_tokens = [counts[i] for i in order]
        stacked = torch.stack([vectors[i] for i in order])  # (N, d) float16
        decode_batch(model, stacked[:b], [2] * b)  # warm-up at this shape
        start = time.perf_counter()
        results = []
        for lo in range(0, len(order), b):
            results += decode_batch(model, stacked[lo : lo + b], n_tokens[lo : lo + b])
        seconds = time.perf_counter() - start
        same = all(r.token_ids == reference[i].token_ids for r, i in zip(results, order))
        drift = max(abs(r.min_margin - reference[i].min_margin) for r, i in zip(results, order))
        rows.append({
            "batch": b,
            "chunks": len(order),
            "tokens": sum(n_tokens),
            "seconds": seconds,
            "tokens_per_s": sum(n_tokens) / seconds,
            "ids_equal_batch1": same,
            "bytes_restored": same and first["bytes_restored"],
            "min_margin": min(r.min_margin for r in results),
            "max_margin_drift": drift,
            "load_average_after": os.getloadavg()[0],
        })
        print(f"batch {b}: {len(order)} chunks in {seconds:.1f} s, {rows[-1]['tokens_per_s']:.2f} tokens/s, ids equal: {same}", flush=True)

    again, last = batch1("last")
    last["ids_equal_batch1"] = all(a.token_ids == r.token_ids for a, r in zip(again, reference))
    last["max_margin_drift"] = max(abs(a.min_margin - r.min_margin) for a, r in zip(again, reference))
    rows.append(last)
    baseline = max(r["tokens_per_s"] for r in rows if r["batch"] == 1)
    for row in rows:
        row["speedup"] = row["tokens_per_s"] / baseline
    bounds = limits(model, batch_sizes)
    def some(b: int) -> torch.Tensor:  # (b, d) float16
        return torch.stack([vectors[i % k] for i in range(b)])

    profile = [] if args.no_profile else [profile_step(model, some(b)) for b in sorted(set(batch_sizes))]

    print(f"\nx batch 1: against the faster batch-1 run ({baseline:.2f} tokens/s)")
    print("| batch | chunks | tokens | seconds | tokens/s | x batch 1 | ids = batch 1 | bytes restored | min margin | max margin drift | load after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batch']}{' (' + r['when'] + ')' if 'when' in r else ''} | {r['chunks']} | {r['tokens']} | {r['seconds']:.1f} | {r['tokens_per_s']:.2f} | "
            f"{r['speedup']:.1f} | {'yes' if r['ids_equal_batch1'] else 'NO'} | {'yes' if r['bytes_restored'] else 'NO'} | "
            f"{r['min_margin']:.4f} | {r['max_margin_drift']:.1e} | {r['load_average_after']:.1f} |"
        )
    print(f"\nweights read per token {bounds['weight_bytes'] / 1e9:.2f} GB, {bounds['flops_per_token'] / 1e9:.3f} GFLOP per token")
    print("| batch | (B,640)x(640,262144) s | GFLOP/s | bound tokens/s (all matmuls at this rate) |")
    print("|---|---|---|---|")
    for m in bounds["matmul"]:
        print(f"| {m['batch']} | {m['seconds']:.4f} | {m['gflops']:.1f} | {m['bound_tokens_per_s']:.1f} |")
    print(f"batch-1 GEMV bandwidth {bounds['matmul'][0].get('gb_per_s', float('nan')):.1f} GB/s -> "
          f"bound {bounds.get('batch1_bound_tokens_per_s', float('nan')):.2f} tokens/s")
    if profile:
        print("\n| batch | model step s | output projection s | layers and the rest s | pick (max + amax) s | argmax + topk(2) s |")
        print("|---|---|---|---|---|---|")
        for p in profile:
            print(
                f"| {p['batch']} | {p['step_s']:.3f} | {p['output_projection_s']:.3f} | {p['layers_and_rest_s']:.3f} | "
                f"{p['pick_s']:.4f} | {p['argmax_top2_s']:.4f} |"
            )

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "command": "python " + " ".join(sys.argv),
            "machine": {**machine(), **cpu()},
            "model_load_s": load_s,
            "source": source,
            "distinct_chunks": k,
            "distinct_token_counts": counts,
            "repeated": any(r["chunks"] > k for r in rows),
            "batch1_margins": [r.min_margin for r in reference],
            "batch1_baseline_tokens_per_s": baseline,
            "rows": rows,
            "limits": bounds,
            "profile": profile,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
