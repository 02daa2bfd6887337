"""LM coding (kind ``lm``), honestly: archive bits per byte against the model's own
cross-entropy on the same tokens with the same context, xz -9e and zstd -19.

For each text: ``LmzCompressor(codec="lm")`` on the default model (one torch thread), the
archive extracted and compared, and the coded size split into where it goes: the ideal
cost of the band decisions and in-band indices (scheme 3) over the cross-entropy, the mode
symbols (which grid, or a raw id), the deep-edge flags and raw ids, the range coder's own
overhead, and the container (header, records, trailer). Cross-entropy is given twice: with
the context the coder had (each chunk: BOS + its own earlier tokens) and, as issue 16
defines the model's ideal code length, in windows of 256 tokens.

    python bench/lm_coding.py --bytes 0 --texts en --json bench/results/lm_coding_whole_en.json
    python bench/lm_coding.py --bytes 4000             # the first ~3.9 KB of each text
    python bench/lm_coding.py --perturb 1024           # drift test on the default model's logits
"""

import argparse
import csv
import json
import lzma
import time
from pathlib import Path

import torch
import zstandard

from corpus import corpus_path
from llmzip import codec, container
from llmzip.kinds import bands, lm
from llmzip.model import load_model



def first_bytes(path: str, n: int) -> bytes:
    """Whole rows of a corpus CSV (column ``chunk``) up to ``n`` bytes, cut at a line end."""
    text = ""
    for row in csv.DictReader(open(path, encoding="utf-8")):
        text += row["chunk"]
        if len(text.encode()) >= n:
            break
    data = text.encode()[:n]
    return data[: data.rfind(b"\n") + 1] or data


def windowed_cross_entropy(loaded, data: bytes, window: int = 256) -> float:
    """Bits of -log2 p(token) over the text's tokens, each window of ``window`` tokens
    after BOS alone (teacher-forced)."""
    import math

    ids = loaded.tokenizer.encode(data.decode("utf-8", "surrogatepass"), add_special_tokens=False)
    model, total = loaded.model, 0.0
    with torch.no_grad():
        for start in range(0, len(ids), window):
            part = ids[start : start + window]
            inputs = torch.tensor([[model.config.bos_token_id] + part[:-1]])
            logp = torch.log_softmax(model(input_ids=inputs).logits[0].double(), -1)
            total -= logp[torch.arange(len(part)), torch.tensor(part)].sum().item() / math.log(2)
    return total


def perturbation(name: str, data: bytes, loaded, n_tokens: int, chunk: int = 128, passes: int = 5) -> dict:
    """Scheme 3 on the default model's own logits (one teacher-forced pass over the text's
    first ``n_tokens`` tokens): encode in chunks of ``chunk``, then decode from every row
    moved by uniform noise up to 0.99x the writer's tolerance (``passes`` times), by 0.99x
    toward its nearest line of grid A and of grid B, and by noise up to 100x (the converse).
    Returns the wrong chunk decodes of each."""
    import numpy

    ids = loaded.tokenizer.encode(data.decode("utf-8", "surrogatepass"), add_special_tokens=False)[:n_tokens]
    model = loaded.model
    with torch.no_grad():
        rows = model(input_ids=torch.tensor([[model.config.bos_token_id] + ids[:-1]])).logits[0].float().numpy()
    starts = range(0, len(ids), chunk)
    coded = []
    for start in starts:
        encoder = bands.BandEncoder(tolerance=lm.WRITE_TOLERANCE, fast=True)
        part = ids[start : start + chunk]
        bands.code_positions([encoder] * len(part), part, torch.from_numpy(rows[start : start + chunk]))
        coded.append(encoder.coded())
    rng = numpy.random.default_rng(16)

    def moved(row, how):
        if how.startswith("toward"):
            x = row.astype(numpy.float64) / lm.DELTA + (0.0 if how.endswith("A") else 0.5)
            return (row + numpy.sign(numpy.rint(x) - x) * lm.WRITE_TOLERANCE * 0.99).astype(numpy.float32)
        scale = 0.99 if how == "noise 0.99x" else 100
        return (row + rng.uniform(-1, 1, row.shape) * lm.WRITE_TOLERANCE * scale).astype(numpy.float32)

    result = {"text": name, "tokens": len(ids)}
    for how, repeat in (("noise 0.99x", passes), ("toward lines A", 1), ("toward lines B", 1), ("noise 100x", 1)):
        wrong = 0
        for _ in range(repeat):
            for start, bits in zip(starts, coded):
                decoder = bands.BandDecoder(bits, fast=True)
                out = [decoder(p, moved(row, how)) for p, row in enumerate(rows[start : start + chunk])]
                wrong += decoder.failed or out != ids[start : start + chunk]
        result[how] = {"token_decodes": len(ids) * repeat, "chunk_decodes": len(coded) * repeat, "wrong": wrong}
    return result


def measure(name: str, data: bytes, loaded) -> dict:
    stats = bands.Stats()
    kind = lm.KIND
    original = type(kind).encode
    kind.encode = lambda loaded, token_lists, **_: original(kind, loaded, token_lists, stats=stats)
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
        "cross_entropy_256_bpB": bits(windowed_cross_entropy(loaded, data)),
        "coded_over_cross_entropy": round(8 * coded / stats.ideal_bits, 4),
        "archive_over_cross_entropy": round(8 * len(archive) / stats.ideal_bits, 3),
        "xz_9e_bytes": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)),
        "zstd_19_bytes": len(zstandard.ZstdCompressor(level=19).compress(data)),
        "parts_bpB": {
            "cross_entropy": bits(stats.ideal_bits),
            "band_decisions_minus_ce": bits(stats.quantised_bits - stats.ideal_bits),
            "mode_symbols": bits(stats.mode_bits),
            "deep_flags_and_raw_ids": bits(stats.escape_bits),
            "range_coder": bits(8 * coded - ideal),
            "container": bits(8 * (len(archive) - coded)),
        },
        "outcomes": dict(zip(["grid_a", "grid_b", "skipped_deep_edges", "raw_id"], stats.outcomes)),
        "compress_s": round(compress_s, 1), "extract_s": round(extract_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=4000, help="bytes of each text; 0: all of it")
    parser.add_argument("--texts", default="en,es,readme", help="which of en, es, readme")
    parser.add_argument("--json")
    parser.add_argument("--model", default="default")
    parser.add_argument("--perturb", type=int, default=0, help="instead: the drift test on this many tokens of each")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(args.model)
    size = args.bytes or 1 << 30
    sources = {
        "en": ("raschka (en)", lambda: first_bytes(corpus_path("raschka_chunks_1000.csv"), size)),
        "es": ("fing (es)", lambda: first_bytes(corpus_path("chunks.csv"), size)),
        "readme": ("README.md", lambda: Path(__file__).resolve().parents[1].joinpath("README.md").read_bytes()[:size]),
    }
    texts = {sources[key][0]: sources[key][1]() for key in args.texts.split(",")}
    rows = []
    for name, data in texts.items():
        if args.perturb:
            rows.append(perturbation(name, data, loaded, args.perturb))
            print(json.dumps(rows[-1]), flush=True)
            continue
        row = measure(name, data, loaded)
        row["vs_xz"] = round(row["archive_bytes"] / row["xz_9e_bytes"], 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"lm": {"scheme": 3, "settings": lm.SETTINGS,
                                                     "chunk_tokens": lm.LM_CHUNK_TOKENS}, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
