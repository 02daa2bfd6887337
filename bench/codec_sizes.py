"""Archive sizes of ``--codec memory``, ``lm`` and ``auto`` on the same inputs (issue 32:
auto is never larger than either).

    python bench/codec_sizes.py [--bytes 4096] [--threads 1] [--max-steps N] [--json FILE] [FILE...]

Without FILE: the first ``--bytes`` of each of the memory-token paper's three corpora (rows
joined by newlines, cut at a character boundary; ``$LLMZIP_PAPER_DATA``, see
bench/corpus.py) and ``fixtures/sample.txt``. Every archive is extracted again and compared
with its input; ``zstd -19`` and ``xz -9e`` of the same bytes are printed beside them.

``memory`` and ``auto`` train the same chunks with the same settings except the step budget
of chunks ``memory`` could cut (``cut_steps``), so each trained group is kept, keyed by its
chunks and their budgets, and handed to the other compressor through its ``group_runner``
where they match instead of being trained twice: the sizes are those of separate runs, in
less time. Default model, one torch thread.
"""

import argparse
import json
import lzma
import sys
import time
from pathlib import Path

import torch
import zstandard

from corpus import CORPORA, corpus_path
from llmzip import codec
from llmzip.config import TrainConfig
from llmzip.bench import read_corpus
from llmzip.model import load_model

REPO = Path(__file__).resolve().parent.parent
CODECS = ("memory", "lm", "auto")


def first_bytes(text: str, size: int) -> bytes:
    """The longest prefix of ``text``'s UTF-8 of at most ``size`` bytes that ends on a character."""
    return text.encode()[:size].decode("utf-8", "ignore").encode()


def inputs(paths: list[str], size: int) -> dict[str, bytes]:
    if paths:
        return {Path(path).name: Path(path).read_bytes() for path in paths}
    texts = {name: first_bytes("\n".join(read_corpus(corpus_path(name), rows=10**6)), size) for name in CORPORA}
    return {**texts, "fixtures/sample.txt": (REPO / "fixtures" / "sample.txt").read_bytes()}


class SharedTraining:
    """A group runner that trains each group once and hands the same entries to every
    compressor that asks for the same chunks (same settings: see the module docstring)."""

    def __init__(self):
        self.trained = {}

    def __call__(self, compressor, chunks, todo, on_step):
        for number, group, budgets in todo:
            key = (tuple(tuple(chunks[index].token_ids) for index in group), tuple(budgets))
            if key not in self.trained:
                self.trained[key] = compressor.train_group(chunks, group, budgets, on_step)
            yield number, self.trained[key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="inputs (default: the paper's corpora and the sample)")
    parser.add_argument("--bytes", type=int, default=4096, help="bytes of each corpus (default 4096)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="default")
    parser.add_argument("--max-steps", type=int, help="optimiser steps a chunk (default: TrainConfig's); fewer make a "
                        "shorter run whose memory and auto archives hold fewer vectors")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    decompressor = codec.LmzDecompressor(loaded=loaded)
    train = TrainConfig(**({"max_steps": args.max_steps} if args.max_steps else {}))
    rows = []
    print("| input | bytes | memory | lm | auto | auto <= min(memory, lm) | zstd -19 | xz -9e | seconds (m / lm / auto) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, data in inputs(args.files, args.bytes).items():
        runner = SharedTraining()
        sizes, seconds, standalone = {}, {}, {}
        for name_of_codec in CODECS:
            compressor = codec.LmzCompressor(loaded=loaded, codec=name_of_codec, group_runner=runner, train=train)
            began = time.perf_counter()
            archive, report = compressor.compress_with_report(data)
            seconds[name_of_codec] = time.perf_counter() - began
            if decompressor.decompress(archive) != data:
                sys.exit(f"{name}: the {name_of_codec} archive does not extract to its input")
            sizes[name_of_codec] = len(archive)
            standalone[name_of_codec] = report.standalone_chunks
        row = {"input": name, "bytes": len(data), "sizes": sizes, "seconds": seconds, "standalone_vectors": standalone,
               "zstd_19": len(zstandard.ZstdCompressor(level=19).compress(data)),
               "xz_9e": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)),
               "auto_le_min": sizes["auto"] <= min(sizes["memory"], sizes["lm"])}
        rows.append(row)
        print(f"| {name} | {len(data):,} | {sizes['memory']:,} | {sizes['lm']:,} | {sizes['auto']:,} | "
              f"{'yes' if row['auto_le_min'] else '**no**'} | {row['zstd_19']:,} | {row['xz_9e']:,} | "
              + " / ".join(f"{seconds[c]:.0f}" for c in CODECS) + " |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "model": args.model,
                                               "max_steps": train.max_steps, "rows": rows}, indent=1)
                                   + "\n")


if __name__ == "__main__":
    main()
