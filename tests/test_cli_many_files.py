"""compress and extract with several files, as gzip: one line per file, an error on one
file does not stop the others, exit status 1 if any failed; -o and -c take one file."""

import pytest

SETTINGS = ["--chunk-tokens", "8", "--max-steps", "40", "--batch-size", "2", "--threads", "1", "--no-progress"]
TEXTS = {
    "a.txt": b"The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.\n",
    "b.txt": b"How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow.\n",
    "c.txt": b"Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2026-11-29.\n",
}


@pytest.fixture
def files(tmp_path):
    paths = []
    for name, text in TEXTS.items():
        (tmp_path / name).write_bytes(text)
        paths.append(tmp_path / name)
    return paths


def test_many_files_each_get_an_archive_and_a_failure_does_not_stop_the_rest(run, tiny_model_dir, tmp_path, files):
    missing = tmp_path / "missing.txt"
    code, out, err = run("compress", files[0], missing, *files[1:], "--model", tiny_model_dir, *SETTINGS)
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[0] == f"llmzip: error: {missing}: no such file"
    assert [line.split(" -> ")[0] for line in lines[1:]] == [f"llmzip: {path}" for path in files]
    for path in files:
        assert (tmp_path / (path.name + ".lmz")).exists()
        path.unlink()

    (tmp_path / "bad.lmz").write_bytes(b"not an archive")
    archives = [tmp_path / (name + ".lmz") for name in TEXTS]
    code, out, err = run("extract", archives[0], tmp_path / "bad.lmz", *archives[1:], "--model", tiny_model_dir)
    assert code == 1 and out == ""
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"llmzip: error: {tmp_path / 'bad.lmz'}: ")
    assert len(err.splitlines()) == 4  # one line per file
    assert not (tmp_path / "bad").exists()
    for name, text in TEXTS.items():
        assert (tmp_path / name).read_bytes() == text


@pytest.mark.parametrize("command", ["compress", "extract"])
@pytest.mark.parametrize("option", [["-o", "out"], ["-c"]])
def test_output_options_take_one_file(run, files, command, option):
    code, out, err = run(command, *files[:2], *option)
    assert code == 2 and "one FILE only" in err and out == ""
