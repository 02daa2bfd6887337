"""Training groups on Ray workers (llmzip.distributed): archives byte-identical to a
single-process run, also when a worker is killed mid-run, and resumable journals.

One local Ray cluster of 2 workers with the tiny model serves the module (~15 s to start
on a 2-core CPU). Every run here uses one torch thread, in the parent and the workers."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")

from llmzip import chunking, codec, container, distributed, kinds  # noqa: E402
from llmzip.errors import LmzError  # noqa: E402
from llmzip.train import TrainConfig  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = TrainConfig(max_steps=40, extra_steps=10, batch_size=1, group_batches=1)  # a group per chunk
FOX = b"The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.\n"
ZEBRAS = b"How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow.\n"
# Each longer than the fixture's smallest vector record (140 B), so compress trains vectors.
INPUTS = [FOX + ZEBRAS, ZEBRAS + FOX, b"Machine learning models are trained on data; the weights are then frozen and reused.\n" + FOX]


@pytest.fixture(scope="module")
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pool(tiny_model_dir, one_thread):
    with distributed.WorkerPool(2, model=str(tiny_model_dir), threads=1) as pool:
        yield pool


@pytest.fixture(scope="module")
def reference(tiny_model, one_thread):
    single = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, train=SETTINGS)
    return [single.compress(data) for data in INPUTS]


def test_workers_write_the_single_process_archives(tiny_model, pool, reference):
    """Training, verification decodes and lm coding on the workers."""
    compressor = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, train=SETTINGS, group_runner=pool, runner=pool)
    archives = [compressor.compress_with_report(data) for data in INPUTS]
    assert all(report.memory_chunks > 0 for _, report in archives)
    assert [archive for archive, _ in archives] == reference


def test_workers_train_with_the_drivers_step_budgets(tiny_model, pool, reference):
    """cut_steps is the driver's setting: its budgets travel with each group, so the workers'
    archives are the single process's, and differ from the default's."""
    single = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, cut_steps=3, train=SETTINGS)
    expected = [single.compress(data) for data in INPUTS]
    assert expected != reference, "3 steps before cutting changes what the fixture model holds"
    compressor = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, cut_steps=3, train=SETTINGS,
                                     group_runner=pool)
    assert [compressor.compress(data) for data in INPUTS] == expected


LONGER = b"".join(b"Sentence %d tells of rivers, lanterns and glass; sentence %d answers it.\n" % (i, i * 7) for i in range(40))


@pytest.fixture(scope="module")
def two_archives(tiny_model, one_thread):
    """(input, [a memory archive, an lm archive]), each in several decode groups of 2. The
    fixture model's lm codes lose to zstd, so the lm archive is packed from them directly."""
    data = b"".join(INPUTS)
    compressor = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, train=SETTINGS, decode_group=2)
    memory_archive, report = compressor.compress_with_report(data)
    assert report.memory_chunks > 2
    chunks = chunking.split(data, tiny_model.tokenizer, max_tokens=8)
    coded = kinds.lm.KIND.encode(tiny_model, [chunk.token_ids for chunk in chunks])
    stored = [kinds.lm.LmChunk(code, len(chunk.token_ids), len(chunk.data), container.chunk_check(chunk.data))
              for code, chunk in zip(coded, chunks)]
    return data, [memory_archive, compressor.pack_archive(stored, data)]


def test_lm_coding_and_decoding_on_workers(tiny_model, pool):
    """Several parts of the writer's coding, and several decode groups, on the workers."""
    token_lists = [chunk.token_ids for chunk in chunking.split(LONGER, tiny_model.tokenizer, max_tokens=300)]
    assert len(kinds.lm.coding_parts(token_lists)) > 1
    done = []
    coded = kinds.lm.KIND.encode(tiny_model, token_lists, on_done=done.append, runner=pool)
    assert coded == kinds.lm.KIND.encode(tiny_model, token_lists)
    assert sum(done) == sum(map(len, token_lists))
    chunks = [kinds.lm.LmChunk(code, len(ids), len(LONGER), 0) for code, ids in zip(coded, token_lists)]
    assert kinds.lm.KIND.decode(tiny_model, chunks, 2, runner=pool) == [list(ids) for ids in token_lists]


def test_extract_and_verify_decode_groups_on_workers(tiny_model_dir, pool, two_archives):
    data, archives = two_archives
    asked = []

    def runner_for(spec, load):
        asked.append(spec)
        return pool

    decompressor = codec.LmzDecompressor(model=str(tiny_model_dir), runner_for=runner_for)  # not closed: the module's pool
    for archive, kind in zip(archives, ("memory", "lm")):  # the fixture model's vectors: fp16
        progress = []
        assert decompressor.decompress(archive, on_progress=lambda d, total: progress.append((d, total))) == data
        assert progress[-1][0] == progress[-1][1] > 0
        assert {check.kind for check in decompressor.verify(archive)} == {kind}
    assert asked == [str(tiny_model_dir)]  # one pool for every archive of one model


def test_workers_holding_another_model_are_refused(tiny_model, pool):
    other = dataclasses.replace(tiny_model, identity=dataclasses.replace(tiny_model.identity, weights_fingerprint="0" * 16))
    with pytest.raises(LmzError, match="the Ray workers hold another model than the driver"):
        codec.LmzCompressor(loaded=other, runner=pool)


def test_a_worker_killed_mid_run_costs_only_its_group(tiny_model, pool, reference, tmp_path):
    victim = pool.pids[0]
    killed = []

    def kill_after_first_group(done, total):
        if done and not killed:  # both workers are busy with the next groups
            os.kill(victim, signal.SIGKILL)
            killed.append(done)

    compressor = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, train=SETTINGS, group_runner=pool)
    data = b"".join(INPUTS)
    single = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, train=SETTINGS).compress(data)
    archive, report = compressor.compress_with_report(data, journal_path=tmp_path / "j", on_chunk=kill_after_first_group)
    assert killed and archive == single
    pids = [pid for _, pid in ray.get([actor.describe.remote() for actor in pool.actors])]
    assert victim not in pids  # Ray restarted the actor, and retried its group there


def test_a_rerun_resumes_from_the_groups_the_driver_journaled(tiny_model, pool, reference, tmp_path):
    journal = tmp_path / "doc.journal"

    def stop_after_two(compressor, chunks, todo, on_step):
        for count, item in enumerate(pool(compressor, chunks, todo, on_step)):
            if count == 2:
                raise KeyboardInterrupt
            yield item

    interrupted = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, train=SETTINGS, group_runner=stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        interrupted.compress(INPUTS[0], journal_path=journal)
    compressor = codec.LmzCompressor(loaded=tiny_model, chunk_tokens=8, train=SETTINGS, group_runner=pool)
    archive, report = compressor.compress_with_report(INPUTS[0], journal_path=journal)
    assert report.resumed_chunks == 2 and archive == reference[0]


def test_cuda_workers_need_one_gpu_each(tiny_model_dir, pool):
    assert ray.cluster_resources().get("GPU", 0) == 0  # the test's local cluster is CPU-only
    with pytest.raises(LmzError, match="needs one GPU per worker; Ray sees 0"):
        distributed.WorkerPool(2, model=str(tiny_model_dir), device="cuda")


def test_more_workers_than_cpus_is_refused_not_a_wait(tiny_model_dir, pool):
    with pytest.raises(LmzError, match="needs one CPU per worker; the Ray cluster has 2"):
        distributed.WorkerPool(3, model=str(tiny_model_dir))


def test_cli_workers_match_single_process_runs(run, tiny_model_dir, tmp_path, pool, reference):
    """The command of issue 17 (its own local Ray instance: the module's pool is closed
    first, so the CLI starts and ends one)."""
    pool.close()
    settings = ["--model", tiny_model_dir, "--chunk-tokens", "8", "--max-steps", "40", "--batch-size", "1", "--group-batches", "1", "--no-progress"]
    names = []
    for number, data in enumerate(INPUTS):
        (tmp_path / f"{number}.txt").write_bytes(data)
        names.append(tmp_path / f"{number}.txt")
    code, _, err = run("compress", *names, *settings, "--workers", "2", "-q")
    assert code == 0, err
    assert [(tmp_path / f"{number}.txt.lmz").read_bytes() for number in range(len(INPUTS))] == reference
    assert not ray.is_initialized()


def test_cli_extract_and_verify_on_workers(run, tiny_model_dir, tmp_path, pool, two_archives):
    pool.close()
    data, archives = two_archives
    (tmp_path / "doc.lmz").write_bytes(archives[1])
    code, _, err = run("extract", tmp_path / "doc.lmz", "--model", tiny_model_dir, "--workers", "2", "--no-progress", "-q")
    assert code == 0, err
    assert (tmp_path / "doc").read_bytes() == data
    code, out, err = run("verify", tmp_path / "doc.lmz", "--model", tiny_model_dir, "--workers", "2", "--no-progress")
    assert code == 0 and out.startswith(f"{tmp_path / 'doc.lmz'}: OK"), err
    assert not ray.is_initialized()


@pytest.mark.parametrize("command", ["compress", "extract", "verify"])
def test_without_ray_workers_is_one_line_and_exit_1(run, tmp_path, monkeypatch, tiny_model_dir, command):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    (tmp_path / "a.txt").write_bytes(INPUTS[0])
    (tmp_path / "b.lmz").write_bytes(b"not read: Ray is missing first")
    name = "a.txt" if command == "compress" else "b.lmz"
    code, out, err = run(command, tmp_path / name, "--model", tiny_model_dir, "--workers", "2")
    assert code == 1 and out == ""
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.txt", "b.lmz"]
    assert err == 'llmzip: error: --workers needs Ray, which is not installed: pip install "llmzip[ray]"\n'


def test_the_cli_does_not_import_ray():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import llmzip.cli, llmzip.codec; "
            "assert 'ray' not in sys.modules")
    subprocess.run([sys.executable, "-c", code, REPO], check=True)


def journaled_groups(journal) -> int:
    """Finished groups in a journal being written (0 while it holds only its key); a torn
    last record is not counted."""
    import msgpack

    if not journal.exists():
        return 0
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(journal.read_bytes())
    count = 0
    try:
        for record in unpacker:
            count += isinstance(record, dict) and "group" in record
    except (msgpack.ExtraData, ValueError):
        pass
    return count


def test_sigterm_with_workers_exits_143_and_leaves_the_journal(tiny_model_dir, tmp_path):
    """ray.init replaces the SIGTERM handler; llmzip puts its own back (cleanup, 143)."""
    text = " ".join(f"Unseen sentence number {i} about lanterns, rivers and glass." for i in range(4))
    (tmp_path / "doc.txt").write_text(text)
    journal = tmp_path / "doc.txt.lmz.journal"
    command = [sys.executable, "-m", "llmzip", "compress", str(tmp_path / "doc.txt"), "--model", str(tiny_model_dir),
               "--chunk-tokens", "16", "--max-steps", "300", "--batch-size", "1", "--group-batches", "1", "--workers", "2", "--no-progress"]
    process = subprocess.Popen(command, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600  # the workers must be running (a group journaled) before the signal
    while time.monotonic() < deadline and not journaled_groups(journal):
        time.sleep(0.1)
    assert journaled_groups(journal), "no group was journaled within 10 minutes"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and err.splitlines()[-1] == "llmzip: terminated", err
    assert journal.exists() and not (tmp_path / "doc.txt.lmz").exists()
