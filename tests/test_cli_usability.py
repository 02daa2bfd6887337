"""What a new user trips over (issue 12): each item through the command line, in process.

Every error is one line on stderr, ``llmzip: error: FILE: message`` where a file is at
fault, and comes before the model loads wherever the arguments alone show it; outputs
are ordinary files; -v says more; --threads applies for one command and no longer.
"""

import io
import json
import os
import re
import stat
import sys

import pytest
import torch

from llmzip import codec
from llmzip.cli import main
from llmzip.cli.group import Terminated
from llmzip.errors import InputError

TINY = ["--chunk-tokens", "16", "--max-steps", "40"]
LEARNED = b"The quick brown fox jumps over the lazy dog."  # the fixture model stores it as one vector
# Long enough (160 B) for compress to train vectors: an input smaller than the smallest
# vector record (140 B with the fixture model) gets none. Its first chunk is LEARNED, a vector.
TEXT = LEARNED + b" Pack my box with five dozen liquor jugs. How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow."
BAD = os.path.join(os.path.dirname(__file__), "..", "fixtures", "bad", "bitflip_trailer.lmz")


@pytest.fixture
def model_args(tiny_model_dir):
    return ["--model", str(tiny_model_dir)]


@pytest.fixture
def no_model(monkeypatch):
    """Fail loudly if anything starts loading a model."""
    import llmzip.model

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(codec, "load_model", refuse)
    monkeypatch.setattr(llmzip.model, "load_model", refuse)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty user cache for journals of stdout runs."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "llmzip" / "journals"


@pytest.fixture
def run_binary(capfd):
    """Like ``run``, for commands whose stdout carries archive bytes: (status, stdout bytes, stderr)."""

    def run(*args, stdin: bytes | None = None):
        saved = sys.stdin, sys.stdout
        out = io.BytesIO()
        sys.stdout = io.TextIOWrapper(out, write_through=True)
        if stdin is not None:
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
        try:
            with pytest.raises(SystemExit) as stop:
                main([str(a) for a in args])
            data = out.getvalue()
        finally:
            sys.stdin, sys.stdout = saved
        return stop.value.code, data, capfd.readouterr().err

    return run


def one_error_line(err: str, *needles) -> bool:
    return err.count("\n") == 1 and err.startswith("llmzip: error: ") and "Traceback" not in err and all(
        needle in err for needle in needles
    )


def compressed(run, model_args, tmp_path, data=LEARNED, name="doc.txt"):
    source = tmp_path / name
    source.write_bytes(data)
    code, _, err = run("compress", source, *model_args, *TINY, "-q")
    assert code == 0, err
    return source, tmp_path / (name + ".lmz")


# 1. An output directory llmzip cannot write in: one line, exit 1, before the model loads.


# A read-only directory stops nobody as root (CI runs as root), so /proc stands in for it.
@pytest.mark.parametrize("where", ["proc", "under-a-file"])
def test_unwritable_output_directory_is_refused_before_the_model_loads(run, tmp_path, no_model, where):
    source = tmp_path / "one.txt"
    source.write_bytes(b"one")
    if where == "proc":  # Linux: /proc refuses new files, even root's
        output, message = "/proc/x.lmz", "cannot write in /proc"
    elif where == "under-a-file":
        (tmp_path / "somefile").write_bytes(b"")
        output, message = tmp_path / "somefile" / "x.lmz", "somefile is not a directory"
    code, out, err = run("compress", source, "-o", output, "--model", tmp_path / "no-model-is-loaded")
    assert code == 1 and out == ""
    assert one_error_line(err, f"{output}: ", message), err
    assert not os.path.exists(str(output) + ".journal")


# 2. A --device this torch cannot use: one line, exit 1, before any work, for every command.


@pytest.mark.parametrize("command", ["compress", "extract", "verify", "bench"])
@pytest.mark.parametrize("device, cuda_build, message", [
    ("tpu", None, "--device tpu: not a torch device"),
    ("cuda", None, "is a CPU-only build; install the CUDA build"),
    ("cuda", "12.4", "torch sees no CUDA device"),
])
def test_an_unusable_device_is_one_line_before_any_work(run, tmp_path, monkeypatch, no_model, command, device,
                                                        cuda_build, message):
    monkeypatch.setattr(torch.version, "cuda", cuda_build)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    (tmp_path / "doc.txt").write_bytes(b"text")
    (tmp_path / "doc.lmz").write_bytes(b"not an archive: a decoder would say so")
    (tmp_path / "rows.csv").write_text("chunk\nsome text\n")
    target = {"compress": "doc.txt", "extract": "doc.lmz", "verify": "doc.lmz", "bench": "rows.csv"}[command]
    code, out, err = run(command, tmp_path / target, "--device", device)
    assert code == 1 and out == ""
    assert one_error_line(err, message), err
    if cuda_build is None and device == "cuda":
        assert "README" in err
    assert not (tmp_path / "doc.txt.lmz").exists() and not (tmp_path / "doc").exists()


# 3. Outputs are ordinary files: the input's mode and mtime (gzip, zstd), else 0666 & ~umask.


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_outputs_take_the_inputs_mode_and_mtime_else_the_umask(run, run_binary, model_args, tmp_path, umask):
    source = tmp_path / "doc.txt"
    source.write_bytes(TEXT)
    source.chmod(0o640)
    os.utime(source, (1_000_000_000, 1_000_000_000))
    assert run("compress", source, *model_args, *TINY, "-q")[0] == 0
    archive = tmp_path / "doc.txt.lmz"
    assert stat.S_IMODE(archive.stat().st_mode) == 0o640  # the input's, whatever the umask
    assert archive.stat().st_mtime == 1_000_000_000

    archive.chmod(0o604)
    os.utime(archive, (1_200_000_000, 1_200_000_000))
    source.unlink()
    assert run("extract", archive, *model_args, "-q")[0] == 0
    assert stat.S_IMODE(source.stat().st_mode) == 0o604  # the archive's, as gunzip does
    assert source.stat().st_mtime == 1_200_000_000

    ordinary = 0o666 & ~umask  # no input file: what `touch` would create
    code, _, err = run_binary("compress", "-", "-o", tmp_path / "stdin.lmz", *model_args, *TINY, "-q", stdin=LEARNED)
    assert code == 0, err
    assert stat.S_IMODE((tmp_path / "stdin.lmz").stat().st_mode) == ordinary
    assert run("export", archive, "-o", tmp_path / "v.safetensors")[0] == 0
    assert stat.S_IMODE((tmp_path / "v.safetensors").stat().st_mode) == ordinary
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# 4. Every per-file error is `llmzip: error: FILE: message`, the file named once.


def test_every_per_file_error_names_the_file_once(run, tmp_path, monkeypatch, no_model):
    monkeypatch.chdir(tmp_path)
    assert run("verify", "missing.lmz") == (1, "", "llmzip: error: missing.lmz: no such file\n")
    assert run("extract", "missing.lmz") == (1, "", "llmzip: error: missing.lmz: no such file\n")
    assert run("export", "missing.lmz", "-o", "v.safetensors") == (1, "", "llmzip: error: missing.lmz: no such file\n")
    for command in (["extract", BAD, "-o", "out.txt"], ["verify", BAD], ["export", BAD, "-o", "v.safetensors"],
                    ["info", BAD]):
        code, _, err = run(*command)
        assert code == 1 and one_error_line(err, f"llmzip: error: {BAD}: ") and err.count(BAD) == 1, (command, err)
    assert not (tmp_path / "out.txt").exists() and not (tmp_path / "v.safetensors").exists()


def test_a_decoding_error_names_the_archive(run, model_args, tmp_path):
    _, archive = compressed(run, model_args, tmp_path, data=TEXT)  # memory chunks: extract needs the model
    code, _, err = run("extract", archive, "-o", tmp_path / "out.txt", "--model", tmp_path / "no-such-model")
    assert code == 1 and one_error_line(err, f"llmzip: error: {archive}: ") and err.count(str(archive)) == 1, err


# 7. -v says more on compress and extract; -c with -o is a usage error; devices need no -f.


def test_verbose_compress_and_extract_list_every_chunk(run, model_args, tmp_path):
    source = tmp_path / "doc.txt"
    source.write_bytes(TEXT)
    code, out, err = run("compress", source, *model_args, *TINY, "-v")
    assert code == 0 and out == ""
    # -v also logs each round that cuts chunks no vector held; the summary follows
    lines = [line for line in err.splitlines() if not re.fullmatch(r"llmzip: \d+ chunks? held by no vector; .*", line)]
    summary = re.fullmatch(r"llmzip: .*doc\.txt -> .*doc\.txt\.lmz: (\d+) chunks \((\d+) vectors?(, \d+ [a-z-]+)*, "
                           r"(\d+) standalone, \d+ % of the input\), 160 B -> [\d,]+ B, [\d.]+ s", lines[0])
    assert summary, lines[0]
    assert re.fullmatch(r"  model .*tiny-gemma3 on cpu, \d+ threads?, loaded in [\d.]+ s", lines[1]), lines[1]
    assert summary[2] == summary[4]  # at the defaults every vector is a memory token
    assert re.fullmatch(r"  chunk     0  memory\s+44 B  \d+ tokens  margin \d+\.\d{3}  stored 128 B  standalone",
                        lines[2]), lines[2]
    assert all(re.fullmatch(r"  chunk +\d+  [a-z-]+ +\d+ B.*", line) for line in lines[3:]), lines
    assert len(lines) == 2 + int(summary[1])  # one line per chunk the summary counts

    source.unlink()
    code, out, err = run("extract", tmp_path / "doc.txt.lmz", *model_args, "-v")
    assert code == 0 and out == ""
    assert err.splitlines()[1:] == lines[2:]
    code, _, err = run("extract", tmp_path / "doc.txt.lmz", *model_args, "-v", "-f", "-q")
    assert code == 0 and err == ""


@pytest.mark.parametrize("command", ["compress", "extract"])
def test_stdout_and_an_output_file_together_are_a_usage_error(run, tmp_path, no_model, command):
    (tmp_path / "doc.txt.lmz").write_bytes(b"")
    code, out, err = run(command, tmp_path / "doc.txt.lmz", "-c", "-o", tmp_path / "out")
    assert code == 2 and out == "" and "-c/--stdout and -o/--output cannot be used together" in err
    assert not (tmp_path / "out").exists()


def test_an_existing_device_is_written_without_force(run, model_args, tmp_path):
    _, archive = compressed(run, model_args, tmp_path)
    code, _, err = run("extract", archive, "-o", os.devnull, *model_args, "-q")
    assert code == 0, err
    assert os.path.exists(os.devnull) and not os.path.isfile(os.devnull)
    code, _, err = run("extract", archive, "-o", tmp_path, *model_args)  # a directory is no device
    assert code == 1 and one_error_line(err, f"{tmp_path}: is a directory"), err


# 8. A directory as input: exit 1 and one line from every command.


@pytest.mark.parametrize("command", [["compress"], ["extract", "-o", "out"], ["verify"], ["info"],
                                     ["export", "-o", "out"], ["bench"]])
def test_a_directory_as_input_is_one_line_and_exit_1(run, tmp_path, monkeypatch, no_model, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    code, out, err = run(command[0], "folder", *command[1:])
    assert code == 1 and out == ""
    assert one_error_line(err, "llmzip: error: folder: ") and "directory" in err, err


# 9. An interrupted compress to stdout resumes from a journal in the user cache.


def test_interrupted_stdout_compress_resumes_from_the_cache_journal(run, run_binary, model_args, tmp_path, cache,
                                                                    monkeypatch):
    data = TEXT
    source = tmp_path / "doc.txt"
    source.write_bytes(data)
    settings = [*model_args, *TINY, "--batch-size", "1", "--group-batches", "1"]
    assert run("compress", source, "-o", tmp_path / "reference.lmz", *settings, "-q")[0] == 0
    reference = (tmp_path / "reference.lmz").read_bytes()

    train_group = codec.LmzCompressor.train_group
    calls = []

    def train_then_interrupt(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train_group(self, *args, **kwargs)

    monkeypatch.setattr(codec.LmzCompressor, "train_group", train_then_interrupt)
    code, out, err = run_binary("compress", source, "-c", *settings)
    assert (code, out, err) == (130, b"", "llmzip: interrupted\n")
    assert len(list(cache.iterdir())) == 1  # the first group, journaled

    monkeypatch.setattr(codec.LmzCompressor, "train_group", train_group)
    code, out, err = run_binary("compress", source, "-c", *settings)
    assert code == 0, err
    assert out == reference and "1 resumed from journal" in err
    assert list(cache.iterdir()) == []  # removed once the archive is out


def test_a_device_output_journals_in_the_cache_not_beside_it(run, model_args, tmp_path, cache, monkeypatch):
    source = tmp_path / "doc.txt"
    source.write_bytes(LEARNED)
    compress_with_report = codec.LmzCompressor.compress_with_report
    journals = []

    def spy(self, data, **kwargs):
        journals.append(kwargs["journal_path"])
        return compress_with_report(self, data, **kwargs)

    monkeypatch.setattr(codec.LmzCompressor, "compress_with_report", spy)
    code, _, err = run("compress", source, "-o", os.devnull, *model_args, *TINY, "-q")
    assert code == 0, err
    assert [path.parent for path in journals] == [cache]
    assert not os.path.exists(os.devnull + ".journal") and list(cache.iterdir()) == []


def test_an_unwritable_cache_means_no_journal_and_a_warning(run_binary, model_args, tmp_path, monkeypatch):
    (tmp_path / "cache").write_bytes(b"a file where the cache directory should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, out, err = run_binary("compress", "-", *model_args, *TINY, stdin=LEARNED)
    assert code == 0 and out.startswith(b"\x89LMZ")
    assert err.startswith("llmzip: cannot journal in ") and "an interrupted run will start over" in err, err


# 10. --threads, for compress, extract, verify and bench, for the command only.


@pytest.mark.parametrize("command", ["compress", "extract", "verify", "bench"])
def test_threads_apply_during_the_command_and_are_restored(run, model_args, tmp_path, monkeypatch, command):
    import llmzip.bench

    _, archive = compressed(run, model_args, tmp_path)
    (tmp_path / "rows.csv").write_text("chunk\nsome text\n")
    seen = []

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        if command == "bench":
            raise KeyboardInterrupt  # an interrupt must restore them too
        raise InputError("stopped here")  # and so must an error

    target = {"compress": (codec.LmzCompressor, "compress_with_report"), "extract": (codec.LmzDecompressor, "decompress"),
              "verify": (codec.LmzDecompressor, "verify"), "bench": (llmzip.bench, "run")}[command]
    monkeypatch.setattr(*target, spy)
    before = torch.get_num_threads()
    threads = before + 1
    argv = {"compress": [tmp_path / "doc.txt", "-o", tmp_path / "new.lmz", *TINY], "extract": [archive, "-o", tmp_path / "x"],
            "verify": [archive], "bench": [tmp_path / "rows.csv"]}[command]
    code, _, err = run(command, *argv, *model_args, "--threads", threads)
    assert (code, err) == (130, "llmzip: interrupted\n") if command == "bench" else code == 1 and "stopped here" in err, err
    assert seen == [threads]
    assert torch.get_num_threads() == before


def test_threads_help_names_the_default_and_why(run):
    for command in ("compress", "extract", "verify", "bench"):
        code, out, _ = run(command, "--help")
        flat = " ".join(out.split())
        assert code == 0 and "--threads" in out and "leave free" in flat and "busy" in flat, command


# 11. Messages: plurals, one clean line for an interrupt, "terminated" for SIGTERM.


@pytest.mark.parametrize("exception, status, message", [
    (KeyboardInterrupt, 130, "llmzip: interrupted\n"),
    (Terminated, 143, "llmzip: terminated\n"),
])
def test_an_interrupt_is_one_line(run, model_args, tmp_path, monkeypatch, exception, status, message):
    (tmp_path / "doc.txt").write_bytes(LEARNED)

    def interrupt(*args, **kwargs):
        raise exception

    monkeypatch.setattr(codec.LmzCompressor, "compress_with_report", interrupt)
    assert run("compress", tmp_path / "doc.txt", *model_args) == (status, "", message)
    assert [p.name for p in tmp_path.iterdir()] == ["doc.txt"]


def test_counts_are_singular_and_plural(run, model_args, tmp_path):
    source = tmp_path / "doc.txt"
    source.write_bytes(LEARNED)  # too small for a vector: one chunk in its smallest exact form
    _, _, err = run("compress", source, *model_args, *TINY)
    assert re.search(r": 1 chunk \(0 vectors, 1 [a-z]+\), ", err), err
    code, out, _ = run("verify", tmp_path / "doc.txt.lmz", *model_args)
    assert code == 0 and re.search(r"OK \(1 chunk: 1 [a-z]+\)", out), out
    source.write_bytes(b"\xff\xfe not UTF-8, so zstd. " + TEXT)
    _, _, err = run("compress", source, *model_args, *TINY, "-f")
    chunks, vectors = map(int, re.search(r": (\d+) chunks? \((\d+) vectors?[,)]", err).groups())
    assert f": {chunks} chunk{'' if chunks == 1 else 's'} (" in err and f"({vectors} vector{'' if vectors == 1 else 's'}" in err
    assert chunks > 1, err


# 12. extract prints a summary line like compress (stderr, not with -q).


def test_extract_prints_a_summary_line(run, model_args, tmp_path):
    source, archive = compressed(run, model_args, tmp_path)
    source.unlink()
    code, out, err = run("extract", archive, *model_args)
    assert code == 0 and out == ""
    size = archive.stat().st_size
    assert re.fullmatch(rf"llmzip: {re.escape(str(archive))} -> {re.escape(str(source))}: 1 chunk, {size:,} B -> 44 B, "
                        r"[\d.]+ s\n", err), err
    code, _, err = run("extract", archive, *model_args, "-f", "-q")
    assert code == 0 and err == ""


# Help texts take their defaults from the code.


def test_help_defaults_are_the_codes(run):
    from llmzip.container import MAX_TOKENS_PER_CHUNK
    from llmzip.kinds.lm import LM_CHUNK_TOKENS
    from llmzip.train import TrainConfig

    defaults = TrainConfig()
    code, out, _ = run("compress", "--help")
    out = " ".join(out.split())  # undo click's line wrapping
    assert code == 0
    assert f"optimiser steps per chunk before it is stored another way (lm, zstd) [default: {defaults.max_steps}]" in out.lower()
    assert f"[default: {defaults.margin}]" in out and f"[default: {defaults.batch_size}]" in out
    assert f"1<=x<={MAX_TOKENS_PER_CHUNK}" in out
    assert f"{codec.DEFAULT_CHUNK_TOKENS['default']} for the default model" in out
    assert f"{LM_CHUNK_TOKENS} with --codec lm" in out and f"({LM_CHUNK_TOKENS}-token chunks)" in out
    assert f"--codec [{'|'.join(codec.CODECS)}]" in out and "[default: memory]" in out
    code, out, _ = run("bench", "--help")
    out = " ".join(out.split())
    assert f"[default: {defaults.lr}]" in out and "[default: rprop for coded vectors with --corrections above 0; adam" in out


# Issue 32: what a gzip user expects.

BINARY = bytes(range(128, 256)) * 1100  # no UTF-8 at all: three chunks of up to 64 KiB, all zstd, no training


def test_a_missing_file_among_two_exits_1_and_the_other_is_done(run, model_args, tmp_path):
    (tmp_path / "real.bin").write_bytes(BINARY)
    code, out, err = run("compress", tmp_path / "nosuch.txt", tmp_path / "real.bin", *model_args, *TINY)
    assert code == 1 and out == ""
    assert err.splitlines()[0] == f"llmzip: error: {tmp_path / 'nosuch.txt'}: no such file"
    assert (tmp_path / "real.bin.lmz").exists()


def test_the_compress_summary_counts_the_chunks_the_archive_holds(run, model_args, tmp_path):
    """Three chunks of input stored with zstd are one record in the archive: compress,
    info and extract -v all say 1 chunk."""
    source, archive = tmp_path / "data.bin", tmp_path / "data.bin.lmz"
    source.write_bytes(BINARY)
    code, _, err = run("compress", source, *model_args, *TINY)
    assert code == 0 and ": 1 chunk (0 vectors, 1 zstd), " in err, err
    code, out, _ = run("info", "--json", archive)
    assert code == 0 and json.loads(out)[0]["chunks"] == {"memory": 0, "zstd": 1}
    source.unlink()
    code, _, err = run("extract", archive, *model_args, "-v")
    assert code == 0 and ": 1 chunk, " in err and len(err.splitlines()) == 2, err


def test_an_lmz_file_is_not_compressed_again_without_force(run, model_args, tmp_path, no_model):
    (tmp_path / "x.lmz").write_bytes(BINARY)
    code, out, err = run("compress", tmp_path / "x.lmz", *model_args)
    assert code == 1 and out == ""
    assert one_error_line(err, f"{tmp_path / 'x.lmz'}: already has .lmz suffix"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.lmz"]


def test_an_lmz_file_among_others_is_left_alone_and_f_compresses_it(run, model_args, tmp_path):
    (tmp_path / "x.lmz").write_bytes(BINARY)
    (tmp_path / "y.bin").write_bytes(BINARY)
    code, _, err = run("compress", tmp_path / "x.lmz", tmp_path / "y.bin", *model_args, *TINY)
    assert code == 1 and "already has .lmz suffix" in err.splitlines()[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.lmz", "y.bin", "y.bin.lmz"]
    code, _, err = run("compress", tmp_path / "x.lmz", "-f", *model_args, *TINY, "-q")
    assert code == 0 and (tmp_path / "x.lmz.lmz").exists(), err


GOLDEN = os.path.join(os.path.dirname(__file__), "..", "fixtures", "golden")


@pytest.mark.parametrize("name, dtype", [("v2-memory.lmz", "float16"), ("v2-memory_int.lmz", "float32")])
def test_export_to_stdout_with_a_summary_line(run_binary, tmp_path, monkeypatch, name, dtype):
    from safetensors.numpy import load

    monkeypatch.chdir(tmp_path)
    archive = os.path.join(GOLDEN, name)
    code, out, err = run_binary("export", archive, "-o", "-")
    assert code == 0 and not os.path.exists("-")
    vectors = load(out)["vectors"]
    assert vectors.dtype.name == dtype
    assert err == f"llmzip: {archive} -> (stdout): 3 vectors (3 x {vectors.shape[1]} {dtype}), {len(out):,} B\n"
    assert run_binary("export", archive, "-o", "v.safetensors", "-q")[::2] == (0, "")
    assert os.path.exists("v.safetensors")


def test_export_refuses_a_terminal_and_its_help_names_both_dtypes(run, monkeypatch, no_model):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, err = run("export", os.path.join(GOLDEN, "v2-memory.lmz"), "-o", "-")
    assert code == 1 and out == "" and one_error_line(err, "refusing to write safetensors bytes to a terminal"), err
    monkeypatch.undo()
    code, out, _ = run("export", "--help")
    out = " ".join(out.split())
    assert code == 0 and "float16 when every row is a `memory` vector" in out and "float32 when any is a memory-int" in out


def test_exported_settings_use_readable_names(run_binary):
    code, out, err = run_binary("export", os.path.join(GOLDEN, "v2-memory.lmz"), "-o", "-")
    assert code == 0, err
    header = json.loads(out[8: 8 + int.from_bytes(out[:8], "little")])  # safetensors: u64 size, JSON header
    assert "chunk_tokens" in json.loads(header["__metadata__"]["llmzip.settings"])


@pytest.mark.parametrize("args, command_line", [
    (["-d", "a.lmz"], ["extract", "a.lmz"]),
    (["--decompress", "a.lmz"], ["extract", "a.lmz"]),
    (["-dc", "a.lmz"], ["extract", "-c", "a.lmz"]),
    (["-kdf", "a.lmz"], ["extract", "-kf", "a.lmz"]),
    (["-t", "a.lmz", "b.lmz"], ["verify", "a.lmz", "b.lmz"]),
    (["-l", "--json", "a.lmz"], ["info", "--json", "a.lmz"]),
    (["-dl", "a.lmz"], ["info", "a.lmz"]),  # as in gzip, -l wins
    (["compress", "-d", "a.lmz"], ["extract", "a.lmz"]),
    (["-k", "a.txt"], ["compress", "-k", "a.txt"]),
    (["-"], ["compress", "-"]),
    (["-odir.lmz", "a.txt"], ["compress", "-odir.lmz", "a.txt"]),  # -o with its value, not -o -d -i -r ...
    (["-d", "--", "-t"], ["extract", "--", "-t"]),  # after --, a file named -t
    (["compress", "a.txt"], ["compress", "a.txt"]),
    (["extract", "-t"], ["extract", "-t"]),  # a command named first keeps its arguments
    (["--help"], ["--help"]),
    (["-V"], ["-V"]),
    ([], []),
])
def test_gzip_spellings_name_a_command(args, command_line):
    from llmzip.cli.group import gzip_style

    assert gzip_style(args) == command_line


def test_gzip_habits_compress_list_test_and_decompress(run, run_binary, model_args, tmp_path):
    source, archive = tmp_path / "data.bin", tmp_path / "data.bin.lmz"
    source.write_bytes(BINARY)
    code, _, err = run("-k", "-n", source, *model_args, *TINY, "-q")  # llmzip -kn FILE compresses
    assert code == 0 and source.exists() and archive.exists(), err
    code, out, _ = run("-l", "--json", archive)
    assert code == 0 and set(json.loads(out)[0]["metadata"]) <= {"creator"}  # -n: no name is ever stored
    assert b"data.bin" not in archive.read_bytes()
    assert run("list", archive)[1].startswith(f"{archive}\n  format version")
    for test in ("-t", "test"):
        code, out, _ = run(test, archive, *model_args)
        assert code == 0 and out.startswith(f"{archive}: OK (1 chunk: 1 zstd)"), (test, out)
    code, out, _ = run_binary("-dc", archive, *model_args)
    assert code == 0 and out == BINARY
    source.unlink()
    code, _, err = run("decompress", "-k", archive, *model_args, "-q")
    assert code == 0 and source.read_bytes() == BINARY and archive.exists(), err
    source.unlink()
    code, _, err = run("compress", "-d", archive, *model_args, "-q")
    assert code == 0 and source.read_bytes() == BINARY, err


def test_recursive_compress_then_extract(run, model_args, tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    inputs = [tree / "a.bin", tree / "sub" / "b.bin"]
    for path in inputs:
        path.write_bytes(BINARY)
    (tree / "sub" / "old.lmz").write_bytes(b"an archive already: not compressed again")
    (tree / "link.bin").symlink_to(tree / "a.bin")  # links are not followed, as in gzip -r
    code, _, err = run("-r", tree, *model_args, *TINY)
    assert code == 0 and sum(" -> " in line for line in err.splitlines()) == 2, err
    assert sorted(str(p.relative_to(tree)) for p in tree.rglob("*.lmz")) == ["a.bin.lmz", "sub/b.bin.lmz", "sub/old.lmz"]
    (tree / "sub" / "old.lmz").unlink()
    for path in inputs:
        path.unlink()
    code, _, err = run("-dr", tree, *model_args)
    assert code == 0 and len(err.splitlines()) == 2, err
    assert all(path.read_bytes() == BINARY for path in inputs)


def test_shell_completion(run, monkeypatch):
    monkeypatch.setenv("_LLMZIP_COMPLETE", "bash_source")
    code, out, _ = run()
    assert code == 0 and "_llmzip_completion" in out
    monkeypatch.setenv("_LLMZIP_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", "llmzip comp")
    monkeypatch.setenv("COMP_CWORD", "1")
    code, out, _ = run()
    assert code == 0 and "compress" in out


def test_margin_help_says_what_each_margin_is(run):
    """Issue 32, item 7: --margin is the training margin; the help names the verify margin
    a stored vector must keep and the margin the archive records."""
    code, out, _ = run("compress", "--help")
    help_text = " ".join(out.split())
    assert code == 0
    assert "Training margin" in help_text and "still wins by 0.25" in help_text and "records the smallest gap" in help_text


def test_min_chunk_tokens_reaches_the_compressor_and_a_bad_one_is_one_line(run, model_args, tmp_path):
    """By default a chunk no 16-token vector holds (40 steps hold few) is cut into 8-token
    pieces, which -v reports; --min-chunk-tokens 16 cuts nothing; one above the budget is
    a one-line error."""
    source = tmp_path / "text.txt"
    source.write_bytes(TEXT)
    code, _, err = run("compress", source, *model_args, *TINY, "-v", "--threads", "1")
    assert code == 0 and "pieces of at most 8 tokens" in err, err
    code, _, err = run("compress", source, *model_args, *TINY, "--min-chunk-tokens", "16", "-v", "-f", "--threads", "1")
    assert code == 0 and "pieces" not in err, err
    code, _, err = run("compress", source, *model_args, *TINY, "--min-chunk-tokens", "17", "-f")
    assert code == 1 and err.count("\n") == 1 and "min_chunk_tokens must be in 1..16" in err, err
