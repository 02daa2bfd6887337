"""Interrupts and disks (issue 7, part 6): SIGINT, SIGTERM and SIGKILL at random points
of ``compress`` and ``extract`` never leave a partial file under the final name, never
touch files that were there before, and a rerun of an interrupted compress resumes to
the archive an uninterrupted run writes. A full disk and an unwritable directory fail
cleanly.

The commands run in children forked from one warm process (``ForkServer``): a fresh
interpreter needs over ten seconds to import torch here, which would leave no room for
the 20+ trials. Each child is a real process: it gets the real signal, runs the real
``main()`` and exits with its real status.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from llmzip import container
from llmzip.kinds.memory import MemoryChunk
from reliability_helpers import archive_path  # noqa: F401 - a fixture
from reliability_helpers import (
    CLEAN, EXACT, TINY_MODEL_DIR, classify, fork_server, run_cli, scaled, tally_fixture,
)

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
EXPECTED_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}
PRECIOUS = b"an earlier output that -f may only replace with a complete one"
# One sentence the model learned (a memory vector) and unseen text that trains to its
# full step budget, chunk by chunk (batch size 1): a run lasts a couple of seconds and
# journals several groups on the way.
# Longer than the fixture's smallest vector record (140 B), so compress trains (and journals) vectors.
TEXT = (b"The quick brown fox jumps over the lazy dog. Unseen lanterns drift over glass rivers at noon. "
        b"Pack my box with five dozen liquor jugs. How vexingly quick daft zebras jump!")
COMPRESS = ["--model", TINY_MODEL_DIR, "--chunk-tokens", "16", "--max-steps", "60", "--batch-size", "1", "--group-batches", "1", "-f"]


tally = tally_fixture("interrupts")


def timed_run(argv, stderr_path) -> float:
    """Run to the end (must succeed); its wall time, the range random kills are drawn from."""
    started = time.monotonic()
    assert fork_server().run(argv, stderr_path=stderr_path) == 0, stderr_path.read_text()
    return time.monotonic() - started


def interrupt(argv, rng, duration, signum, stderr_path) -> int:
    """Start ``argv``, send ``signum`` at a random moment of a normal run's duration
    (mostly before its end, and after ``main()`` has begun: the first milliseconds of a
    child belong to the fork server's code); the exit status (0 when it finished first)."""
    pid = fork_server().start(argv, stderr_path=stderr_path)
    time.sleep(rng.uniform(0.05, 0.9 * duration))
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # already exited, not yet reaped: the status says how
    return fork_server().wait(pid)


def check_aftermath(tally, family, folder, target, complete: bytes, signum, status, stderr_path) -> None:
    """What an interrupted run may leave: the old file or the complete new one under the
    final name, the journal, and (SIGKILL only, which no process can clean up after) a
    temporary file; the kept file untouched; one line on stderr (after the run's summary
    when the signal came between the finished work and the exit). Counted as ``exact``
    when the run finished before the signal, ``clean error`` when it was interrupted."""
    name = signal.Signals(signum).name
    assert status in (0, EXPECTED_STATUS[signum]), (status, stderr_path.read_text())
    assert target.read_bytes() in (PRECIOUS, complete)
    assert (folder / "keep.txt").read_bytes() == b"keep"
    leftovers = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    if signum == signal.SIGKILL:
        tally.count("temporary files left by SIGKILL", len(leftovers))
        for path in leftovers:
            path.unlink()
    else:
        assert leftovers == [], leftovers
        if status:
            said = "llmzip: terminated" if signum == signal.SIGTERM else "llmzip: interrupted"
            lines = stderr_path.read_text().split("\n")
            assert lines[-2:] == [said, ""], lines  # said last, on one line
            # Lines before it only when the signal came after the work was done (the
            # complete output in place): the run's own summary, no blank line.
            before = lines[:-2]
            assert not before or target.read_bytes() == complete, lines
            assert all(line.startswith("llmzip: ") for line in before), lines
    tally.add(family, name, EXACT if status == 0 else CLEAN)


def setup_folder(folder, target):
    folder.mkdir(exist_ok=True)
    (folder / "keep.txt").write_bytes(b"keep")
    target.write_bytes(PRECIOUS)


def test_interrupted_compress_resumes_to_the_identical_archive(tally, tmp_path):
    rng = random.Random(7)
    source = tmp_path / "doc.txt"
    source.write_bytes(TEXT)
    duration = timed_run(["compress", source, "-o", tmp_path / "reference.lmz", *COMPRESS], tmp_path / "err")
    reference = (tmp_path / "reference.lmz").read_bytes()
    assert any(isinstance(c, MemoryChunk) for c in container.unpack(reference).chunks)
    folder = tmp_path / "out"
    target = folder / "doc.txt.lmz"
    argv = ["compress", source, "-o", target, *COMPRESS]
    for trial in range(scaled(12, 60)):
        signum = SIGNALS[trial % 3]
        setup_folder(folder, target)
        status = interrupt(argv, rng, duration, signum, tmp_path / "err")
        check_aftermath(tally, "compress", folder, target, reference, signum, status, tmp_path / "err")
        assert fork_server().run(argv, stderr_path=tmp_path / "err") == 0, (tmp_path / "err").read_text()
        assert target.read_bytes() == reference
        assert not (folder / "doc.txt.lmz.journal").exists()
        tally.add("compress", "rerun (resume)", EXACT)
        tally.count("reruns that resumed from a journal", "resumed from journal" in (tmp_path / "err").read_text())


def test_interrupted_extract_leaves_the_old_output_or_the_exact_one(tally, archive_path, tmp_path):
    rng = random.Random(8)
    folder = tmp_path / "out"
    target = folder / "doc.txt"
    argv = ["extract", archive_path, "-o", target, "--model", TINY_MODEL_DIR, "-f"]
    setup_folder(folder, target)
    duration = timed_run(argv, tmp_path / "err")
    restored = target.read_bytes()
    assert restored != PRECIOUS
    for trial in range(scaled(9, 60)):
        signum = SIGNALS[trial % 3]
        setup_folder(folder, target)
        status = interrupt(argv, rng, duration, signum, tmp_path / "err")
        check_aftermath(tally, "extract", folder, target, restored, signum, status, tmp_path / "err")


@pytest.mark.parametrize(
    "output, message",
    [
        ("/dev/full", "No space left on device"),  # exists: written in place, never renamed over
        ("/proc/llmzip-out.txt", "cannot write in /proc"),  # a directory no file can be created in
        ("/nonexistent-dir/out.txt", "does not exist"),
    ],
)
def test_an_unwritable_output_fails_cleanly(archive_path, output, message):
    code, err, _ = run_cli(["extract", archive_path, "-o", output, "-f", "--model", TINY_MODEL_DIR])
    assert classify(code, err, None, None) == CLEAN and message in err, err
    assert os.path.exists("/dev/full") and not os.path.isfile("/dev/full")


def test_stdout_on_a_full_disk_fails_cleanly(archive_path):
    """A real process: the interpreter's own flush at exit must not add a traceback."""
    with open("/dev/full", "wb") as full:
        done = subprocess.run([sys.executable, "-m", "llmzip.cli", "extract", str(archive_path), "-c",
                               "--model", str(TINY_MODEL_DIR)], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert done.returncode == 1 and done.stderr == "llmzip: error: stdout: cannot write: No space left on device\n"
