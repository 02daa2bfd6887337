"""`llmzip info`: golden JSON output, the human-readable form, and one stderr line per
bad archive (exit 1, no traceback)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmzip.cli import cli
from llmzip.container import Header, checksum, pack

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
BAD = sorted((FIXTURES / "bad").glob("*.lmz"))


def info(*args):
    return CliRunner().invoke(cli, ["info", *map(str, args)])


@pytest.mark.parametrize("path", sorted((FIXTURES / "golden").glob("*.lmz")), ids=lambda p: p.name)
def test_json_matches_golden(path, monkeypatch):
    monkeypatch.chdir(FIXTURES)  # the golden files name their archive relative to fixtures/
    result = info("--json", path.relative_to(FIXTURES))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == path.with_suffix(".info.json").read_text()


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_archive_gives_one_stderr_line(path):
    result = info(path)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"llmzip: error: {path}: ")


def test_bad_archive_through_the_real_entry_point():
    """The same promise from a real process: exit 1, one line, no traceback."""
    bad = FIXTURES / "bad" / "msgpack_deep_nesting.lmz"
    command = [sys.executable, "-m", "llmzip.cli", "info", str(bad)]
    process = subprocess.run(command, capture_output=True, text=True)
    assert process.returncode == 1
    assert process.stdout == ""
    [line] = process.stderr.splitlines()
    assert line.startswith(f"llmzip: error: {bad}: header (offset 18)")


@pytest.mark.parametrize("args", [["info", "fixtures/golden/mixed.lmz"], ["-l", "-"], ["--help"], ["compress", "--help"],
                                  ["-d", "--help"]])
def test_info_and_help_do_not_import_torch(args):
    code = (
        "import sys; from llmzip.cli import cli; "
        f"cli.main({args!r}, standalone_mode=False); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    archive = (FIXTURES / "golden" / "mixed.lmz").read_bytes()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, input=archive)


def test_human_output_names_everything_the_issue_asks_for():
    result = info(FIXTURES / "golden" / "mixed.lmz")
    assert result.exit_code == 0
    for expected in [
        "format version  1.0",
        "archive size    898 B",
        "input size      425 B, xxh64 7ebe9d7546079f34",
        "ratio           2.113 (archive / input)",
        "stored bytes    memory 32 B, zstd 151 B, overhead 715 B",
        "chunks          5: 2 memory (101 B of input), 3 zstd (324 B of input)",
        "min margin      0.5",
        "source_kind            default",
        "source_revision        null",
        "created  2025-01-01T00:00:00Z",
    ]:
        assert expected in result.stdout


def test_several_files_like_xz_list():
    """Each good file described, each bad one a stderr line, a total line, exit 1."""
    golden = FIXTURES / "golden"
    bad = FIXTURES / "bad" / "bitflip_vector.lmz"
    result = info(golden / "mixed.lmz", bad, golden / "empty.lmz")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"llmzip: error: {bad}: trailer checksum")
    assert result.stdout.count("format version") == 2
    total = "total: 2 files, archive 1,502 B, input 425 B, ratio 3.534 (archive / input)\n"
    assert result.stdout.endswith(total)


def test_several_files_as_json():
    golden = FIXTURES / "golden"
    result = info("--json", golden / "mixed.lmz", golden / "empty.lmz")
    assert [entry["file"] for entry in json.loads(result.stdout)] == [str(golden / "mixed.lmz"),
                                                                      str(golden / "empty.lmz")]
    assert json.loads(result.stdout)[1]["ratio"] is None  # empty input: no ratio


def test_hostile_strings_cannot_reach_the_terminal(tmp_path):
    path = tmp_path / "escape.lmz"
    header = Header(model={"\x1b]0;title\x07": "x"}, settings={}, vector_dim=1, input_size=0,
                    input_xxh64=checksum(b""), metadata={"creator": "\x1b[2J\nfake line"})
    path.write_bytes(pack(header, []))
    result = info(path)
    assert result.exit_code == 0
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert '"\\u001b[2J\\nfake line"' in result.stdout


def test_no_file_is_a_usage_error():
    assert info().exit_code == 2


def test_dash_reads_the_archive_from_stdin():
    path = FIXTURES / "golden" / "mixed.lmz"
    from_file = json.loads(info("--json", path).stdout)
    result = CliRunner().invoke(cli, ["info", "--json", "-"], input=path.read_bytes())
    assert result.exit_code == 0
    assert json.loads(result.stdout) == [{**from_file[0], "file": "-"}]
    result = CliRunner().invoke(cli, ["info", "-"], input=path.read_bytes())
    assert result.exit_code == 0 and result.stdout.startswith("stdin\n  format version  1.0\n")

