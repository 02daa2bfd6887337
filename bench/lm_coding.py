"""LM coding (kind ``lm``), honestly: archive bits per byte against the model's own
cross-entropy on the same tokens with the same context, xz -9e and zstd -19.

For each text: ``LmzCompressor(codec="lm")`` on the default model (one torch thread), the
archive extracted and compared, and the coded size split into where it goes: the ideal
cost of the quantised distributions (grids, escape symbols included), the mode symbols
(which grid, or a raw escape), the escaped token ids (18 bits each), the range coder's own
overhead, and the container (header, records, trailer).

    python bench/lm_coding.py --bytes 4000 --json bench/results/lm_coding.json
"""

import argparse
import csv
import json
import lzma
import time
from pathlib import Path

import torch
import zstandard

from llmzip import codec, container
from llmzip.kinds import lm
from llmzip.model import load_model

PAPER = "/work/shared/data/memory-token-paper/"


def first_bytes(path: str, n: int) -> bytes:
    """Whole rows of a corpus CSV (column ``chunk``) up to ``n`` bytes, cut at a line end."""
    text = ""
    for row in csv.DictReader(open(path, encoding="utf-8")):
        text += row["chunk"]
        if len(text.encode()) >= n:
            break
    data = text.encode()[:n]
    return data[: data.rfind(b"\n") + 1] or data


def measure(name: str, data: bytes, loaded) -> dict:
    stats = lm.Stats()
    kind = lm.KIND
    original = type(kind).encode
    kind.encode = lambda loaded, token_lists, group, **_: original(kind, loaded, token_lists, group, stats=stats)
    try:
        began = time.perf_counter()
        archive, report = codec.LmzCompressor(loaded=loaded, codec="lm").compress_with_report(data)
        compress_s = time.perf_counter() - began
    finally:
        del kind.encode
    began = time.perf_counter()
    assert codec.LmzDecompressor(loaded=loaded).decompress(archive) == data
    extract_s = time.perf_counter() - began
    parsed = container.unpack(archive)
    coded = sum(len(c.coded) for c in parsed.chunks if isinstance(c, lm.LmChunk))
    bits = lambda b: round(b / len(data), 4)  # noqa: E731 - bits per input byte
    ideal = stats.quantised_bits + stats.mode_bits + stats.escape_bits
    return {
        "text": name, "bytes": len(data), "tokens": stats.tokens, "chunks": report.chunks,
        "lm_chunks": report.lm_chunks, "zstd_chunks": report.fallback_chunks,
        "archive_bytes": len(archive), "archive_bpB": bits(8 * len(archive)),
        "cross_entropy_bpB": bits(stats.ideal_bits),
        "archive_over_cross_entropy": round(8 * len(archive) / stats.ideal_bits, 3),
        "xz_9e_bytes": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)),
        "zstd_19_bytes": len(zstandard.ZstdCompressor(level=19).compress(data)),
        "parts_bpB": {
            "cross_entropy": bits(stats.ideal_bits),
            "quantised_distribution_minus_ce": bits(stats.quantised_bits - stats.ideal_bits),
            "mode_symbols": bits(stats.mode_bits),
            "escaped_ids": bits(stats.escape_bits),
            "range_coder": bits(8 * coded - ideal),
            "container": bits(8 * (len(archive) - coded)),
        },
        "outcomes": dict(zip(["grid_a", "grid_b", "escape_in_grid", "raw_escape", "of_escapes_in_band"],
                             stats.outcomes)),
        "escapes_per_token": round((stats.outcomes[2] + stats.outcomes[3]) / max(stats.tokens, 1), 4),
        "compress_s": round(compress_s, 1), "extract_s": round(extract_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=4000)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model("default")
    texts = {
        "raschka (en)": first_bytes(PAPER + "raschka_chunks_1000.csv", args.bytes),
        "fing (es)": first_bytes(PAPER + "chunks.csv", args.bytes),
        "README.md": Path(__file__).resolve().parents[1].joinpath("README.md").read_bytes()[: args.bytes],
    }
    rows = []
    for name, data in texts.items():
        row = measure(name, data, loaded)
        row["vs_xz"] = round(row["archive_bytes"] / row["xz_9e_bytes"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"lm": {"delta": lm.DELTA, "r_levels": lm.R_LEVELS,
                                                     "tolerance": lm.TOLERANCE}, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
