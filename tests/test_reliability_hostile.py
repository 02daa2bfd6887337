"""Hostile inputs (issue 7, part 3): archives that declare huge sizes, token counts,
vectors or nesting are refused in under a second without allocating more than 64 MiB
over the process baseline.

The container-level attacks are the committed files in ``fixtures/bad`` plus a few built
here; they are read in a fresh interpreter so that its peak memory (``ru_maxrss``,
C allocations included) and each file's own Python allocations (tracemalloc, which
counts address space reserved but never touched, like a 4 GiB read buffer) measure them
and nothing else. The attacks that only the codec can see (a memory record
that asks for more tokens than it has bytes, a vector wider than the model) go through
``llmzip verify`` and ``extract`` with the fixture model.
"""

import dataclasses
import time

import pytest

from reliability_helpers import (
    CLEAN, EXACT, HANG, REPO, TINY_MODEL_DIR, cached_model_loads, classify, probe_archives, real_archive,
    run_cli, tally_fixture,
)
from llmzip import container
from llmzip.kinds.memory import MemoryChunk

MAX_SECONDS = 1.0
MAX_MIB = 64


def forged(loaded, *, n_tokens=None, vector_dim=None) -> bytes:
    """The real archive with its first memory record's ``n_tokens`` or the header's
    ``vector_dim`` (every vector zero-padded to it) changed, packed by ``container.pack``
    itself: a well-formed container that only the codec can refuse."""
    archive = container.unpack(real_archive(loaded))
    vector_dim = vector_dim or archive.header.vector_dim
    padding = bytes(2 * (vector_dim - archive.header.vector_dim))
    chunks, first = [], True
    for chunk in archive.chunks:
        if isinstance(chunk, MemoryChunk):
            tokens = n_tokens if first and n_tokens else chunk.n_tokens
            chunk = MemoryChunk(chunk.vector + padding, tokens, chunk.length, chunk.check, chunk.min_margin)
            first = False
        chunks.append(chunk)
    return container.pack(dataclasses.replace(archive.header, vector_dim=vector_dim), chunks)


# name -> changes, given the first memory chunk
CODEC_ATTACKS = {
    "n_tokens 65536, the format's limit": lambda memory: dict(n_tokens=65536),
    "n_tokens one more than the chunk's bytes": lambda memory: dict(n_tokens=memory.length + 1),
    "vector_dim 32768, the format's limit": lambda memory: dict(vector_dim=32768),
}


tally = tally_fixture("hostile inputs")


@pytest.fixture(scope="module")
def hostile_files(tiny_model, tmp_path_factory):
    """fixtures/bad, plus the codec-level attacks (as bytes and as files)."""
    folder = tmp_path_factory.mktemp("hostile")
    memory = next(c for c in container.unpack(real_archive(tiny_model)).chunks
                  if isinstance(c, MemoryChunk))
    built = {name: forged(tiny_model, **changes(memory)) for name, changes in CODEC_ATTACKS.items()}
    paths = sorted((REPO / "fixtures" / "bad").glob("*.lmz"))
    for index, data in enumerate(built.values()):
        paths.append(folder / f"codec_attack_{index}.lmz")
        paths[-1].write_bytes(data)
    return paths, built


def test_container_attacks_are_refused_fast_and_small(tally, hostile_files):
    paths, _ = hostile_files
    results = probe_archives(paths)
    assert len(results) == len(paths)
    for result in results:
        codec_level = "codec_attack" in result["file"]
        family = "codec-level attacks (valid containers)" if codec_level else "fixtures/bad"
        tally.add(family, "read_header", EXACT if result["outcome"] == "accepted" else CLEAN)
        assert result["outcome"] == "accepted" if codec_level else result["outcome"] != "accepted", result
        assert result["seconds"] < MAX_SECONDS and max(result["mib"], result["traced_mib"]) < MAX_MIB, result
    tally.notes["slowest read_header, s"] = round(max(r["seconds"] for r in results), 4)
    tally.notes["peak process memory over baseline (ru_maxrss), MiB"] = round(max(r["mib"] for r in results), 2)
    tally.notes["largest Python allocation peak of one file (tracemalloc), MiB"] = round(
        max(r["traced_mib"] for r in results), 2)


@pytest.mark.parametrize("attack", list(CODEC_ATTACKS))
@pytest.mark.parametrize("command", ["verify", "extract"])
def test_codec_attacks_are_refused_before_decoding(tally, hostile_files, tmp_path, attack, command):
    _, built = hostile_files
    path, output = tmp_path / "hostile.lmz", tmp_path / "hostile.out"
    path.write_bytes(built[attack])
    argv = [command, path, "--model", TINY_MODEL_DIR] + (["-o", output] if command == "extract" else [])
    with cached_model_loads():
        run_cli(["verify", path, "--model", TINY_MODEL_DIR])  # load the model outside the timing
        started = time.perf_counter()
        code, err, _ = run_cli(argv)
        seconds = time.perf_counter() - started
    outcome = classify(code, err, None, None, output)
    tally.add("codec-level attacks (valid containers)", command, outcome if seconds < MAX_SECONDS else HANG)
    slowest = "slowest codec-level refusal, s"
    tally.notes[slowest] = round(max(seconds, tally.notes.get(slowest, 0)), 4)
    assert outcome == CLEAN, err
    assert seconds < MAX_SECONDS
