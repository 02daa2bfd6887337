"""Container overhead when every chunk falls back to zstd: llmzip against `zstd -19`.

    python bench/fallback_overhead.py [FILE...]

Compresses each input with the fixture model and one optimiser step per chunk (so every
chunk falls back: this measures the container, not the model), and prints the archive
size against zstd level 19 on the same bytes (python-zstandard, which like the zstd CLI
writes a content checksum). Without FILE it uses the three corpora of the memory-token
paper (in ``$LLMZIP_PAPER_DATA``, see bench/corpus.py) and a 1 MiB synthetic text (the
one tests/test_codec.py checks within 2 %).
"""

import csv
import random
import sys
from pathlib import Path

import torch
import zstandard

from corpus import CORPORA, corpus_path
from llmzip import codec, container
from llmzip.model import load_model
from llmzip.train import TrainConfig

REPO = Path(__file__).resolve().parent.parent


def synthetic_mib() -> bytes:
    rng = random.Random(7)
    words = "memory token vector archive model exact zstd chunk byte text the a of".split()
    lines = (" ".join(rng.choice(words) for _ in range(rng.randint(3, 14))) + ".\n" for _ in range(40_000))
    return "".join(lines).encode()[: 1 << 20]


def corpus(path: Path) -> bytes:
    csv.field_size_limit(1 << 24)
    with path.open(encoding="utf-8", newline="") as handle:
        return "\n".join(row["chunk"] for row in csv.DictReader(handle)).encode()


def main(paths: list[str]) -> None:
    torch.set_num_threads(1)
    inputs = {Path(p).name: Path(p).read_bytes() for p in paths}
    if not inputs:
        inputs = {name: corpus(corpus_path(name)) for name in CORPORA}
        inputs["synthetic 1 MiB"] = synthetic_mib()
    loaded = load_model(str(REPO / "fixtures" / "tiny-gemma3"))
    compressor = codec.LmzCompressor(loaded=loaded, chunk_tokens=64, train=TrainConfig(max_steps=1, batch_size=256))
    print("| input | bytes | chunks | zstd records | llmzip archive | zstd -19 | archive / zstd |")
    print("|---|---|---|---|---|---|---|")
    for name, data in inputs.items():
        archive, report = compressor.compress_with_report(data)
        assert report.memory_chunks == 0, "a chunk was stored as a vector: not a fallback-only measurement"
        records = sum(container.read_header(archive).chunk_counts.values())
        zstd = len(zstandard.ZstdCompressor(level=19).compress(data))
        print(f"| {name} | {len(data):,} | {report.chunks:,} | {records} | {len(archive):,} | {zstd:,} | {len(archive) / zstd:.4f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
