"""Shared machinery of the reliability suite (``tests/test_reliability_*.py``) and of
``bench/reliability.py``, which runs the same cases at a larger scale and prints the
counts table of RELIABILITY.md.

Profiles: ``LLMZIP_RELIABILITY_PROFILE=ci`` (the default, a few minutes on two cores) or
``long`` (every count scaled up, for a local run). :func:`scaled` picks the count.

Outcomes, as issue 7 defines them: ``exact`` (the command succeeded and any output is the
original input), ``clean error`` (exit 1, one line on stderr, no traceback, no output
file), ``crash`` (anything else that failed), ``hang`` (over :data:`HANG_SECONDS`) and
``wrong`` (success with output that differs from the input: the one outcome an archiver
must never have).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL_DIR = REPO / "fixtures" / "tiny-gemma3"
PROFILE = os.environ.get("LLMZIP_RELIABILITY_PROFILE", "ci")
HANG_SECONDS = 5.0

EXACT, CLEAN, CRASH, HANG, WRONG = "exact", "clean error", "crash", "hang", "wrong"
OUTCOMES = (EXACT, CLEAN, CRASH, HANG, WRONG)

# The fixture model learned these sentences (fixtures/make_tiny_model.py), so they become
# memory vectors in a few dozen steps when a document opens with the fox or zebra sentence;
# anything the model does not hold is stored another way (lm or zstd).
CORPUS_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs.",
    "How vexingly quick daft zebras jump!",
    "Sphinx of black quartz, judge my vow.",
)
# Settings that store the corpus sentences as vectors in about a second on a CPU.
TRAIN = dict(max_steps=60, extra_steps=10, batch_size=8)
CHUNK_TOKENS = 16


def scaled(ci: int, long: int) -> int:
    """The case count for the current profile."""
    return long if PROFILE == "long" else ci


def mixed_text(seed: int = 0) -> bytes:
    """A document with memory chunks and zstd chunks: corpus sentences, unseen text and
    bytes that are not UTF-8, in an order that depends on ``seed``."""
    rng = random.Random(seed)
    parts = [s.encode() for s in CORPUS_SENTENCES[:3]]
    parts += [b"Unseen lanterns drift over glass rivers at noon.", b"\xff\xfe binary \x00\x01 tail"]
    rng.shuffle(parts)
    return b" ".join(parts) + b"\n"


_ARCHIVES: dict[int, bytes] = {}


def real_archive(loaded, seed: int = 0) -> bytes:
    """The archive of :func:`mixed_text` made with the fixture model (cached per seed)."""
    if seed not in _ARCHIVES:
        from llmzip.codec import LmzCompressor
        from llmzip.train import TrainConfig

        compressor = LmzCompressor(loaded=loaded, chunk_tokens=CHUNK_TOKENS, train=TrainConfig(**TRAIN))
        _ARCHIVES[seed] = compressor.compress(mixed_text(seed))
    return _ARCHIVES[seed]


def reseal(archive: bytes) -> bytes:
    """Recompute the trailer, as a buggy writer (or an attacker) would: the mutation then
    reaches the header, record and model checks behind the trailer."""
    from llmzip.container import TRAILER, checksum

    body = archive[: -TRAILER.size]
    return body + TRAILER.pack(checksum(body))


def header_end(archive: bytes) -> int:
    """Offset of the first record: prefix plus the declared header size."""
    from llmzip.container import PREFIX

    return PREFIX.size + PREFIX.unpack_from(archive)[-1]


class _Hang(BaseException):
    """Raised by the timer; a BaseException so no ``except Exception`` swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise :class:`_Hang` in the main thread after ``seconds`` (SIGALRM)."""

    def expire(signum, frame):
        raise _Hang

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def cached_model_loads():
    """Make the codec reuse each loaded model (keyed by spec, dtype and attention), so an
    in-process sweep of thousands of ``verify``/``extract`` runs loads the model once."""
    from llmzip import codec

    loads = {}
    real = codec.load_model

    def load_model(spec, **options):
        key = (spec, *sorted((name, str(value)) for name, value in options.items()))
        if key not in loads:
            loads[key] = real(spec, **options)
        return loads[key]

    with mock.patch.object(codec, "load_model", load_model):
        yield


def run_cli(argv: list[str]) -> tuple[int | str, str, bytes]:
    """``llmzip.cli.main(argv)`` in-process with a hang timer: (exit code, stderr, stdout
    bytes). An exception other than ``SystemExit`` comes back as code ``"crash"``, with
    its traceback in stderr; a run past :data:`HANG_SECONDS` as code ``"hang"``."""
    from llmzip.cli import main

    stderr = io.StringIO()
    stdout = io.TextIOWrapper(io.BytesIO(), write_through=True)
    code: int | str
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        try:
            with time_limit(HANG_SECONDS):
                main([str(arg) for arg in argv])
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except _Hang:
            code = HANG
        except BaseException:  # noqa: BLE001 - any other escape is what we are counting
            stderr.write(traceback.format_exc())
            code = CRASH
    return code, stderr.getvalue(), stdout.buffer.getvalue()


def classify(code, stderr: str, output: bytes | None, expected: bytes | None, output_path: Path | None = None) -> str:
    """One run's outcome. ``output``: what it wrote (None if it wrote nothing); ``expected``:
    the original input, or None for commands that restore nothing (info, verify)."""
    if code == HANG:
        return HANG
    if code == CRASH or "Traceback" in stderr:
        return CRASH
    if code == 0:
        if expected is not None and output != expected:
            return WRONG
        return EXACT
    one_line = stderr.count("\n") == 1 and stderr.startswith("llmzip: error: ")
    wrote = output_path is not None and output_path.exists()
    return CLEAN if code == 1 and one_line and not wrote else CRASH


def sweep_cli(archive: bytes, original: bytes, workdir: Path) -> dict[str, str]:
    """Run one (possibly damaged) archive through ``info``, ``verify`` and ``extract`` in
    process; return each command's outcome. ``verify``'s success is checked against a
    real restore, so a verify that passes a wrong archive counts as ``wrong``."""
    path, output = workdir / "case.lmz", workdir / "case.out"
    path.write_bytes(archive)
    output.unlink(missing_ok=True)
    outcomes = {"info": classify(*run_cli(["info", path])[:2], None, None)}
    code, err, _ = run_cli(["verify", path, "--model", TINY_MODEL_DIR, "-q"])
    verified = classify(code, err, None, None)
    outcomes["extract"] = classify(
        *run_cli(["extract", path, "-o", output, "--model", TINY_MODEL_DIR])[:2],
        output.read_bytes() if output.exists() else None, original, output,
    )
    if verified == EXACT and outcomes["extract"] != EXACT:
        verified = WRONG  # verify passed an archive that does not restore the input
    outcomes["verify"] = verified
    return outcomes


def sweep_unpack(archive: bytes, original_archive: bytes, *, resealed: bool) -> str:
    """``container.unpack`` on a damaged archive. Its output is the fallback chunks'
    bytes: returning bytes that differ from the original's is ``wrong``, and so is
    accepting any damage that left the trailer stale (``resealed`` False), since the
    trailer covers every byte. A resealed archive whose memory records changed is
    ``exact`` here: only the model can check those."""
    from llmzip.container import unpack
    from llmzip.kinds.zstd import FallbackChunk
    from llmzip.errors import LmzError

    try:
        with time_limit(HANG_SECONDS):
            parsed = unpack(archive)
    except _Hang:
        return HANG
    except LmzError:
        return CLEAN
    except Exception:  # noqa: BLE001
        return CRASH
    fallback = [c.data for c in parsed.chunks if isinstance(c, FallbackChunk)]
    original = [c.data for c in unpack(original_archive).chunks if isinstance(c, FallbackChunk)]
    return EXACT if resealed and fallback == original else WRONG


class Tally:
    """Outcome counts per (family, command), for assertions and the RELIABILITY.md table,
    plus free-form notes (figures such as margins, seconds, MiB)."""

    def __init__(self, suite: str):
        self.suite = suite
        self.counts: dict[tuple[str, str], Counter] = {}
        self.notes: dict[str, object] = {}

    def add(self, family: str, command: str, outcome: str) -> None:
        self.counts.setdefault((family, command), Counter())[outcome] += 1

    def count(self, note: str, n: int) -> None:
        """Add ``n`` to a counting note."""
        self.notes[note] = self.notes.get(note, 0) + n

    def publish(self) -> None:
        """Append the counts and notes to ``$LLMZIP_RELIABILITY_REPORT`` (JSON lines),
        which ``bench/reliability.py`` turns into RELIABILITY.md's table; no-op unset."""
        report = os.environ.get("LLMZIP_RELIABILITY_REPORT")
        if not report:
            return
        with open(report, "a") as handle:
            for (family, command), counts in self.counts.items():
                row = {"suite": self.suite, "family": family, "command": command, "counts": dict(counts)}
                handle.write(json.dumps(row) + "\n")
            if self.notes:
                handle.write(json.dumps({"suite": self.suite, "notes": self.notes}) + "\n")

    def failures(self) -> dict:
        """Every (family, command) with a crash, hang or wrong output."""
        return {key: dict(c) for key, c in self.counts.items() if c[CRASH] or c[HANG] or c[WRONG]}


@pytest.fixture(scope="module")
def archive_path(tiny_model, tmp_path_factory) -> Path:
    """The real archive of :func:`mixed_text` (seed 0) as a file, once per module."""
    path = tmp_path_factory.mktemp("archive") / "doc.txt.lmz"
    path.write_bytes(real_archive(tiny_model))
    return path


def tally_fixture(suite: str):
    """A module-scoped ``tally`` fixture that publishes its counts when the module ends."""

    @pytest.fixture(scope="module")
    def tally():
        tally = Tally(suite)
        yield tally
        tally.publish()

    return tally


def mutations(archive: bytes, rng, *, body_flips: int, overwrites: int, cli_share: int):
    """Yield ``(family, damaged archive, through_cli)``: every bit flip in the prefix,
    header and trailer, a sample of flips across the records and fallback frame, every
    truncation length, and random byte-range overwrites. Each flip and overwrite also
    comes ``resealed`` (trailer recomputed) so that it reaches the checks behind the
    trailer. ``unpack`` takes every case; the CLI commands (milliseconds each, up to a
    tenth of a second when the model decodes) take a random one in ``cli_share`` of the
    header bit flips and truncations, and every other case."""
    start, end = header_end(archive), len(archive) - 8
    head_bits = [*range(start * 8), *range(end * 8, len(archive) * 8)]
    body_bits = rng.sample(range(start * 8, end * 8), min(body_flips, (end - start) * 8))
    for family, bits in (("header+trailer bit flip", head_bits), ("body bit flip", body_bits)):
        for bit in bits:
            damaged = bytearray(archive)
            damaged[bit // 8] ^= 1 << (bit % 8)
            through_cli = family == "body bit flip" or rng.randrange(cli_share) == 0
            yield family, bytes(damaged), through_cli
            if bit < end * 8:
                yield family + ", resealed", reseal(bytes(damaged)), through_cli
    for length in range(len(archive)):
        yield "truncation", archive[:length], rng.randrange(cli_share) == 0
    for _ in range(overwrites):
        offset = rng.randrange(len(archive))
        size = rng.randint(1, min(64, len(archive) - offset))
        damaged = archive[:offset] + rng.randbytes(size) + archive[offset + size:]
        if damaged == archive:  # the random bytes happened to be the original ones
            continue
        yield "byte-range overwrite", damaged, True
        yield "byte-range overwrite, resealed", reseal(damaged), True


# --------------------------------------------------------------------------- processes


class ForkServer:
    """A Python process that imports llmzip and loads the fixture model once, then forks
    one child per command: a fresh interpreter takes over ten seconds to import torch and
    transformers here, a fork a few milliseconds. Each child runs ``llmzip.cli.main``
    exactly as the console script does (its own signals, files and exit status).

    The server pins torch to one thread before any work, so forking never inherits a
    live OpenMP pool, and every child computes with the same numerics.
    """

    def __init__(self):
        env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        self.process = subprocess.Popen(
            [sys.executable, __file__, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, text=True, cwd=REPO,
        )
        assert self._reply()["ready"]

    def _request(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._reply()

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the fork server died")
        return json.loads(line)

    def start(self, argv, *, stderr_path: Path) -> int:
        """Fork a child running ``main(argv)`` with stderr to ``stderr_path``; its pid."""
        return self._request(op="run", argv=[str(a) for a in argv], stderr=str(stderr_path))["pid"]

    def wait(self, pid: int) -> int:
        """The child's exit status; ``-N`` when signal N ended it."""
        return self._request(op="wait", pid=pid)["status"]

    def run(self, argv, *, stderr_path: Path) -> int:
        """Run ``main(argv)`` in a child to the end; its exit status."""
        return self.wait(self.start(argv, stderr_path=stderr_path))

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


_SERVER: ForkServer | None = None


def fork_server() -> ForkServer:
    """The one fork server of this test session (started on first use, ten seconds)."""
    global _SERVER
    if _SERVER is None:
        _SERVER = ForkServer()
        atexit.register(_SERVER.close)
    return _SERVER


def _serve() -> None:
    import torch

    torch.set_num_threads(1)
    from llmzip.cli import main
    from llmzip.model import load_model

    load_model(str(TINY_MODEL_DIR))  # import everything a load needs, once
    reply = sys.stdout
    print(json.dumps({"ready": True}), file=reply, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "wait":
            _, status = os.waitpid(request["pid"], 0)
            print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), file=reply, flush=True)
            continue
        pid = os.fork()
        if pid == 0:
            _child(main, request)
        print(json.dumps({"pid": pid}), file=reply, flush=True)


def _child(main, request) -> None:
    """Run one command in a forked child and leave with its exit status, never returning
    into the server loop."""
    code = 70
    try:
        null = os.open(os.devnull, os.O_RDWR)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(null, 0), os.dup2(null, 1), os.dup2(err, 2)
        sys.stdin = open(os.devnull)
        main(request["argv"])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported as a traceback, counted as a crash
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def probe_archives(paths) -> list[dict]:
    """Read each archive with ``read_header`` (every container check) in one fresh
    interpreter; per file: outcome, seconds, the process's peak memory over the baseline
    taken after the imports (``mib``: ``ru_maxrss``, the kernel's high-water mark, C
    allocations such as zstd's included; it only grows, so it bounds every file before
    it) and the file's own peak of Python allocations (``traced_mib``: tracemalloc)."""
    script = (
        "import json, resource, sys, time, tracemalloc\n"
        "from llmzip.container import read_header\n"
        "from llmzip.errors import LmzError\n"
        "def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "base = peak()\n"
        "tracemalloc.start()\n"
        "for path in sys.argv[1:]:\n"
        "    tracemalloc.reset_peak()\n"
        "    start = time.perf_counter()\n"
        "    try:\n"
        "        read_header(path); outcome = 'accepted'\n"
        "    except LmzError as exc:\n"
        "        outcome = type(exc).__name__\n"
        "    print(json.dumps({'file': path, 'outcome': outcome, 'seconds': time.perf_counter() - start,\n"
        "                      'mib': peak() - base, 'traced_mib': tracemalloc.get_traced_memory()[1] / 2**20}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *map(str, paths)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    sys.path.insert(0, str(REPO))
    _serve()
