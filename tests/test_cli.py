"""The command line, in-process through ``main()`` (exit codes, one-line errors, atomic
outputs) and in subprocesses where a real process matters (SIGKILL and resume)."""

import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from safetensors.numpy import load_file

from llmzip.cli import main

TINY = ["--chunk-tokens", "16", "--max-steps", "40"]
# Long enough (160 B) for compress to train vectors (an input smaller than the fixture
# model's smallest vector record, 140 B, gets none); its first chunk is stored as a vector.
TEXT = (b"The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
        b"How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow.")


@pytest.fixture
def model_args(tiny_model_dir):
    return ["--model", str(tiny_model_dir)]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"The quick brown fox jumps over the lazy dog.\r\n",
        "caf\u00e9 \u6771\u4eac \U0001f642\n".encode(),
        bytes(range(256)) * 4,
        random.Random(3).randbytes(1 << 20),  # 1 MB: the API test covers 1 MB of text
    ],
    ids=["empty", "ascii-crlf", "utf-8", "binary", "1mb-binary"],
)
def test_compress_then_extract_is_byte_exact(run, model_args, tmp_path, data):
    source = tmp_path / "doc.txt"
    source.write_bytes(data)
    code, out, err = run("compress", source, *model_args, *TINY, "--no-progress")
    assert code == 0, err
    assert out == ""  # nothing but archive bytes ever goes to stdout
    assert source.read_bytes() == data  # the input is kept
    assert not (tmp_path / "doc.txt.lmz.journal").exists()  # removed on success
    source.unlink()
    code, _, err = run("extract", tmp_path / "doc.txt.lmz", *model_args)
    assert code == 0, err
    assert source.read_bytes() == data


def test_existing_output_is_kept_without_force(run, model_args, tmp_path):
    source, target = tmp_path / "doc.txt", tmp_path / "doc.txt.lmz"
    source.write_bytes(b"Pack my box with five dozen liquor jugs.")
    target.write_bytes(b"precious")
    code, _, err = run("compress", source, *model_args, *TINY)
    assert code == 1
    assert err.count("\n") == 1 and "already exists" in err and "Traceback" not in err
    assert target.read_bytes() == b"precious"
    code, _, err = run("compress", source, *model_args, *TINY, "-f", "-q")
    assert code == 0 and err == ""
    assert target.read_bytes().startswith(b"\x89LMZ")


def test_stdout_and_stdin_forms(model_args, tmp_path, monkeypatch, capfdbinary):
    data = b"Sphinx of black quartz, judge my vow."
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    with pytest.raises(SystemExit) as stop:
        main(["compress", "-", *model_args, *TINY, "-q"])  # stdin in, so stdout out
    archive = capfdbinary.readouterr().out
    assert stop.value.code == 0 and archive.startswith(b"\x89LMZ")
    (tmp_path / "a.lmz").write_bytes(archive)
    with pytest.raises(SystemExit) as stop:
        main(["extract", str(tmp_path / "a.lmz"), "-c", *model_args])
    assert stop.value.code == 0
    assert capfdbinary.readouterr().out == data
    assert not (tmp_path / "a").exists()


def test_archive_bytes_are_never_written_to_a_terminal(run, model_args, tmp_path, monkeypatch):
    source = tmp_path / "doc.txt"
    source.write_bytes(b"x")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, _, err = run("compress", source, "-c", *model_args)
    assert code == 1 and "terminal" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["compress", "missing.txt"], "no such file"),
        (["extract", "missing.lmz"], "no such file"),
        (["extract", "archive.bin"], "does not end in .lmz"),
        (["verify", "missing.lmz"], "no such file"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_1(run, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "archive.bin").write_bytes(b"")
    code, _, err = run(*args)
    assert code == 1
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize("option, value", [("--max-steps", "0"), ("--correction-steps", "0"), ("--correction-weight", "2")])
def test_usage_errors_exit_2(run, option, value):
    code, _, err = run("compress", option, value, "x")
    assert code == 2 and option in err


def test_training_options_reach_the_trainer(run, model_args, tmp_path, monkeypatch):
    from llmzip import codec

    seen = []
    build = codec.LmzCompressor.__init__
    monkeypatch.setattr(codec.LmzCompressor, "__init__", lambda self, **kw: seen.append(kw["train"]) or build(self, **kw))
    source = tmp_path / "doc.txt"
    source.write_bytes(b"Pack my box with five dozen liquor jugs.")
    code, _, err = run("compress", source, *model_args, *TINY, "--corrections", "32", "--correction-steps", "10",
                       "--correction-weight", "0.5", "--optimizer", "adam", "-q")
    assert code == 0, err
    assert (seen[0].corrections, seen[0].correction_steps, seen[0].correction_weight, seen[0].optimizer,
            seen[0].max_steps) == (32, 10, 0.5, "adam", 40)


def test_verify_reports_each_archive(run, model_args, tmp_path, tiny_model_dir):
    source = tmp_path / "doc.txt"
    source.write_bytes(TEXT)
    assert run("compress", source, *model_args, *TINY)[0] == 0
    code, out, _ = run("verify", tmp_path / "doc.txt.lmz", *model_args, "-v")
    assert code == 0
    assert re.search(r"OK \(\d+ chunks: \d+ memory.*, min decode margin", out) and "chunk     0  memory" in out, out
    bad = tiny_model_dir.parent / "bad" / "bitflip_trailer.lmz"
    code, out, err = run("verify", tmp_path / "doc.txt.lmz", bad, *model_args)
    assert code == 1
    assert "OK" in out and err.count("\n") == 1 and "bitflip_trailer" in err


def test_extract_with_the_wrong_model_names_both_fingerprints_and_writes_nothing(run, model_args, tmp_path, tiny_model_dir):
    source = tmp_path / "doc.txt"
    source.write_bytes(TEXT)  # memory chunks: extract needs the archive's model
    assert run("compress", source, *model_args, *TINY)[0] == 0
    archive_model = json.loads(run("info", tmp_path / "doc.txt.lmz", "--json")[1])[0]["model"]

    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    tokenizer_json = json.loads((other / "tokenizer.json").read_text())
    vocab = tokenizer_json["model"]["vocab"]
    vocab["\u0120fox"], vocab["\u0120quick"] = vocab["\u0120quick"], vocab["\u0120fox"]  # two tokens swap ids
    (other / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    source.unlink()
    code, _, err = run("extract", tmp_path / "doc.txt.lmz", "--model", other)
    assert code == 1 and err.count("\n") == 1
    assert "tokenizer_fingerprint" in err and archive_model["tokenizer_fingerprint"] in err
    assert not source.exists()


def test_export_writes_vectors_and_metadata(run, model_args, tmp_path):
    source = tmp_path / "doc.txt"
    source.write_bytes(
        b"\xff\xfe\nSphinx of black quartz, judge my vow.\nPack my box with five dozen liquor jugs. How vexingly quick "
        b"daft zebras jump!\nThe quick brown fox jumps over the lazy dog."
    )
    assert run("compress", source, *model_args, *TINY)[0] == 0
    code, _, err = run("export", tmp_path / "doc.txt.lmz", "-o", tmp_path / "v.safetensors")
    assert code == 0, err
    from safetensors import safe_open

    vectors = load_file(tmp_path / "v.safetensors")["vectors"]
    with safe_open(tmp_path / "v.safetensors", framework="numpy") as handle:
        rows = json.loads(handle.metadata()["llmzip.chunks"])
    assert vectors.shape == (len(rows), 64) and vectors.dtype.name == "float16"
    assert rows and all(row["offset"] > 0 for row in rows)  # the binary prefix is no vector
    from llmzip import container, kinds
    from llmzip.kinds.memory import MemoryKind

    offset, vectors_at = 0, []  # (chunk, offset, length) of each memory chunk, as the archive holds them
    for index, chunk in enumerate(container.unpack((tmp_path / "doc.txt.lmz").read_bytes()).chunks):
        if isinstance(kinds.of(chunk), MemoryKind):
            vectors_at.append((index, offset, chunk.length))
        offset += chunk.length
    assert [(row["chunk"], row["offset"], row["length"]) for row in rows] == vectors_at


def test_sigkill_then_rerun_resumes_to_the_identical_archive(tiny_model_dir, tmp_path):
    """Kill compress after it journaled a group; no output appears under the final name,
    and the rerun resumes and writes the same archive an uninterrupted run writes."""
    # Unseen text: every chunk trains to its full budget, so the run takes long enough.
    text = " ".join(f"Unseen sentence number {i} about lanterns, rivers and glass." for i in range(6))
    source = tmp_path / "doc.txt"
    source.write_text(text)
    command = [sys.executable, "-m", "llmzip.cli", "compress", str(source), "--model", str(tiny_model_dir),
               "--chunk-tokens", "16", "--max-steps", "60", "--batch-size", "1", "--group-batches", "1", "-q"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

    subprocess.run(command + ["-o", str(tmp_path / "reference.lmz")], check=True, env=env)
    target, journal = tmp_path / "doc.txt.lmz", tmp_path / "doc.txt.lmz.journal"
    process = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not journal.exists() or journal.stat().st_size < 200):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert journal.exists(), "the run ended before it journaled a group"
    assert not target.exists()

    rerun = subprocess.run(command, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert target.read_bytes() == (tmp_path / "reference.lmz").read_bytes()
    assert not journal.exists()
