"""End to end with the real default model (slow; runs in CI too): the README's sample
text through the CLI, and the README's Python examples run as written."""

import contextlib
import io
import json
import re

import pytest

from pathlib import Path

from llmzip.cli import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "fixtures" / "sample.txt"


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def cli(*args) -> int:
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in args])
    return stop.value.code


@pytest.fixture(scope="module")
def sample_archive(tmp_path_factory, default_model):  # default_model: convert/cache once
    directory = tmp_path_factory.mktemp("e2e")
    # A step bound keeps CI time predictable; the chunk needs a few hundred steps. At the
    # defaults every vector regenerates its chunk alone, which the README's export example
    # then does with plain transformers.
    assert cli("compress", SAMPLE, "-o", directory / "doc.lmz", "--no-progress", "--max-steps", "800") == 0
    return directory / "doc.lmz"


def test_sample_compresses_to_memory_vectors_and_extracts_exactly(sample_archive, capsys):
    capsys.readouterr()
    assert cli("info", sample_archive, "--json") == 0
    info = json.loads(capsys.readouterr().out)[0]
    assert info["chunks"].get("memory-int-lm", 0) >= 1, info["chunks"]  # the default model's default form
    assert info["standalone"]["chunks"] == info["chunks"]["memory-int-lm"]  # memory tokens, every one
    assert cli("verify", sample_archive, "-v") == 0
    assert "OK" in capsys.readouterr().out
    restored = sample_archive.with_name("restored.txt")
    assert cli("extract", sample_archive, "-o", restored) == 0
    assert restored.read_bytes() == SAMPLE.read_bytes()


def test_readme_export_example_regenerates_the_first_chunk(sample_archive, monkeypatch):
    monkeypatch.chdir(sample_archive.parent)
    assert cli("export", sample_archive, "-o", "doc.safetensors") == 0
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(readme_python_blocks()[1], {})
    chunk_text = printed.getvalue()[:-1]  # print() added one newline
    assert chunk_text and chunk_text in SAMPLE.read_text()


def test_readme_api_example_round_trips_and_prints_the_chunk_counts(default_model):
    """The README's Python API example, run as written: its archive restores the text
    (checked here too, so that ``python -O`` cannot skip the example's own assert), and
    the line it prints is the archive's chunk count per kind, read without the model."""
    import ast

    import llmzip

    example = readme_python_blocks()[0]
    assert "llmzip.compress(text)" in example and "print(llmzip.read_header(archive)" in example
    namespace, printed = {}, io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(example, namespace)
    text, archive = namespace["text"], namespace["archive"]
    assert isinstance(archive, bytes) and archive.startswith(b"\x89LMZ")
    assert llmzip.decompress(archive) == text
    counts = ast.literal_eval(printed.getvalue().strip())
    header = llmzip.read_header(archive).to_dict()
    assert counts == header["chunks"] and sum(counts.values()) == 1, counts  # one short chunk
    assert header["input_size"] == len(text) and header["archive_size"] == len(archive)


def test_empty_input_gives_an_archive_of_at_most_32_bytes(default_model):
    """Issue 32's target was 48 B (issue 11's 160 B): an archive no chunk of which needs the
    model records none, and the whole input needs no records (format 2.6): 28 B, within
    min(0, zstd -19) + 32 B."""
    from llmzip import codec

    archive = codec.LmzCompressor(loaded=default_model).compress(b"")
    assert len(archive) <= 32, len(archive)
    assert codec.LmzDecompressor(loaded=default_model).decompress(archive) == b""
