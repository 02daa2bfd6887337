"""Archive size, honestly: llmzip against zstd -19, xz -9 and gzip -9 on real files.

For each FILE this measures the general-purpose compressors in-process and, where an
archive of that file exists (``FILE.lmz``, made by ``llmzip compress FILE``), reads its
size, its share of chunks stored as vectors and the bytes of text each vector holds
(``llmzip.read_header``; no model needed). For every file it also counts the chunks the
default model's chunker makes and gives the size of their vectors alone, the floor under
any llmzip archive of that file in which every chunk became a vector.

    python bench/archive_size.py FILE... --json bench/results/archive_size.json --plot bench/results/archive_size.png
"""

import argparse
import gzip
import json
import lzma
import os
import sys
from pathlib import Path

import zstandard

from llmzip import container, read_header
from llmzip.chunking import split
from llmzip.config import DEFAULT_CHUNK_TOKENS, DEFAULT_VECTOR_FORM
from llmzip.kinds import memory_int
from llmzip.model import load_model


def measure(path: str, tokenizer, chunk_tokens: int, vector_bytes: int) -> dict:
    data = Path(path).read_bytes()
    chunks = split(data, tokenizer, max_tokens=chunk_tokens)
    row = {
        "file": path,
        "input": len(data),
        "gzip -9": len(gzip.compress(data, 9, mtime=0)),
        "zstd -19": len(zstandard.ZstdCompressor(level=19).compress(data)),
        "xz -9": len(lzma.compress(data, preset=9)),
        "xz -9e": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)),
        "chunks": len(chunks),
        "vectors alone, every chunk a vector": len(chunks) * vector_bytes,
    }
    archive = path + ".lmz"
    if os.path.exists(archive):
        info = read_header(archive)
        memory_kinds = [kind for kind in info.chunk_counts if kind.startswith("memory")]  # memory, memory-int
        vectors = sum(info.chunk_counts[kind] for kind in memory_kinds)
        vector_text = sum(info.input_bytes[kind] for kind in memory_kinds)
        row.update({
            "lmz": info.archive_size,
            "lmz chunks": sum(info.chunk_counts.values()),
            "share as vectors": vectors / max(1, sum(info.chunk_counts.values())),
            "input bytes in vectors": vector_text / len(data) if data else None,
            "bytes per vector": round(sum(info.stored_bytes[kind] for kind in memory_kinds) / vectors) if vectors else None,
            "text bytes per vector": round(vector_text / vectors) if vectors else None,
            "lmz overhead": info.overhead_bytes,
        })
    return row


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = ["input", "gzip -9", "zstd -19", "xz -9", "vectors alone, every chunk a vector", "lmz"]
    figure, axes = plt.subplots(figsize=(7.5, 3.8), dpi=120)
    width = 0.8 / len(kinds)
    for k, kind in enumerate(kinds):
        xs = [i + (k - len(kinds) / 2 + 0.5) * width for i, row in enumerate(rows) if kind in row]
        label = "llmzip .lmz (measured)" if kind == "lmz" else kind
        axes.bar(xs, [row[kind] for row in rows if kind in row], width, label=label)
    axes.set_xticks(range(len(rows)), [os.path.basename(row["file"]) for row in rows], fontsize=7, rotation=15)
    axes.set_yscale("log")
    axes.set_ylabel("bytes (log scale)")
    axes.legend(fontsize=7)
    axes.set_title("llmzip (Gemma 3 270M, 64-token chunks, 4-bit vectors) against general-purpose compressors", fontsize=9)
    figure.tight_layout()
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--json")
    parser.add_argument("--plot")
    parser.add_argument("--vector-bytes", type=int, help="bytes per vector for the floor column [default: the "
                        "default form at fixed width; coded vectors (memory-int-coded) vary, ~245 B measured]")
    args = parser.parse_args()
    loaded = load_model("default")
    rank, bits = DEFAULT_VECTOR_FORM["default"]  # the default model's default stored form
    vector_bytes = args.vector_bytes or (2 * loaded.identity.hidden_size if rank == 0 else (
        len(container.varint(rank)) + 1 + 2 + memory_int.coefficient_bytes(rank, bits)))  # rank, bits, scale, q
    rows = [measure(path, loaded.tokenizer, DEFAULT_CHUNK_TOKENS["default"], vector_bytes) for path in args.files]

    columns = ["input", "gzip -9", "zstd -19", "xz -9", "xz -9e", "chunks", "vectors alone, every chunk a vector",
               "lmz", "share as vectors", "input bytes in vectors", "bytes per vector", "text bytes per vector"]
    print("| file | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            cells.append("-" if value is None else f"{value:.2f}" if isinstance(value, float) else f"{value:,}")
        print(f"| {os.path.basename(row['file'])} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.plot:
        plot(rows, args.plot)
    print(f"vector size: {vector_bytes} B (rank {rank}, {bits} bits, d = {loaded.identity.hidden_size})", file=sys.stderr)


if __name__ == "__main__":
    main()
