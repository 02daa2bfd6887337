"""Determinism (issue 7, part 4): one archive restored in separate processes, under
different thread counts, and chunk by chunk, gives the same bytes, or a clean checksum
error, never other bytes. Each chunk's decode margin is checked against the margin the
archive recorded at compress time.

Extract decodes memory chunks in groups (``decode_batch``), so "other chunks in flight"
here means a chunk decoded as a row of its archive's group versus alone.
"""

import subprocess
import sys

import pytest
import torch

from llmzip import container
from llmzip.codec import LmzDecompressor
from llmzip.errors import ChecksumError
from reliability_helpers import archive_path  # noqa: F401 - a fixture
from reliability_helpers import (
    CLEAN, EXACT, TINY_MODEL_DIR, WRONG, fork_server, mixed_text, real_archive, scaled, tally_fixture,
)

MARGIN_TOLERANCE = 1e-3  # logit units; the archive's verify margin is 0.25


tally = tally_fixture("determinism")


def test_five_processes_restore_identical_bytes(tally, archive_path, tmp_path):
    """Five forked processes, each loading the model afresh, and one new interpreter."""
    outputs = []
    for run in range(5):
        output = tmp_path / f"out{run}"
        argv = ["extract", archive_path, "-o", output, "--model", TINY_MODEL_DIR]
        assert fork_server().run(argv, stderr_path=tmp_path / f"err{run}") == 0, (tmp_path / f"err{run}").read_text()
        outputs.append(output.read_bytes())
    fresh = subprocess.run([sys.executable, "-m", "llmzip.cli", "extract", str(archive_path), "-c",
                            "--model", str(TINY_MODEL_DIR)], capture_output=True, timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    outputs.append(fresh.stdout)
    for output in outputs:
        tally.add("extract in separate processes", "extract", EXACT if output == mixed_text(0) else WRONG)
    assert set(outputs) == {mixed_text(0)}


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_counts_give_the_exact_bytes(tally, tiny_model, threads):
    """Margins are there so that thread counts cannot move a token: the bytes must come
    back, not merely a clean checksum error (which would hide a numerics regression)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        restored = LmzDecompressor(loaded=tiny_model).decompress(real_archive(tiny_model))
    except ChecksumError:
        restored = None
    finally:
        torch.set_num_threads(before)
    outcome = CLEAN if restored is None else EXACT if restored == mixed_text(0) else WRONG
    tally.add(f"torch threads = {threads}", "decompress", outcome)
    assert outcome == EXACT


def test_each_chunk_decodes_alone_as_in_the_archive_with_its_recorded_margin(tally, tiny_model):
    decompressor = LmzDecompressor(loaded=tiny_model)
    checks = []
    for seed in range(scaled(3, 8)):
        archive_bytes = real_archive(tiny_model, seed)
        in_archive = [c for c in decompressor.verify(archive_bytes) if c.kind == "memory"]
        archive = container.unpack(archive_bytes)
        offsets = [0]
        for chunk in archive.chunks:
            offsets.append(offsets[-1] + chunk.length)
        for check in in_archive:
            alone, header = archive.chunks[check.index], archive.header
            data = mixed_text(seed)[offsets[check.index] : offsets[check.index + 1]]
            single = container.pack(container.Header(header.model, header.settings, header.vector_dim,
                                                     alone.length, container.checksum(data), header.metadata), [alone])
            [check_alone] = decompressor.verify(single)  # its bytes are checked in there
            # Alone it is a batch of one, in the archive a row of its decode group: the
            # logits may differ in their last bits, never by the margin.
            close = abs(check_alone.decode_margin - check.decode_margin) <= MARGIN_TOLERANCE
            tally.add("memory chunk alone vs in its decode group", "verify", EXACT if close else WRONG)
            assert close
            assert abs(check.decode_margin - check.recorded_margin) <= MARGIN_TOLERANCE
        checks += in_archive
    assert checks
    margins = sorted(c.decode_margin for c in checks)
    tally.notes["memory chunks checked"] = len(checks)
    spread = (margins[0], margins[len(margins) // 2], margins[-1])
    tally.notes["decode margins (min, median, max)"] = [round(m, 3) for m in spread]
    tally.notes["largest |decode margin - recorded margin|"] = max(abs(c.decode_margin - c.recorded_margin) for c in checks)
