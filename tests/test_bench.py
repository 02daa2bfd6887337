"""``llmzip bench``: the paper's measurements on a CSV corpus, with the fixture model.

The fixture has memorised a small corpus (see tests/test_train.py): its passages fit in one
vector, an unseen sentence does not, so both outcomes and the capacity bisection run.
"""

import csv
import json

import pytest

from llmzip import bench
from llmzip.errors import InputError
from llmzip.train import TrainConfig

PASSAGES = [
    "The quick brown fox",
    "How vexingly quick daft zebras jump!",
    "El veloz murciélago hindú comía feliz cardillo y kiwi.",
]
UNSEEN = "Zygote plumbers negotiate vivid xylophones at midnight in Reykjavik."
FAST = TrainConfig(lr=1.0, max_steps=120)  # lr suits the tiny model (tests/test_train.py)
FAST_ARGS = ["--lr", "1", "--max-steps", "120", "--threads", "1"]


def write_csv(path, texts, column="chunk"):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", column])
        writer.writerows(enumerate(texts))
    return path


@pytest.fixture(scope="module")
def measured(tiny_model):
    texts = PASSAGES + [UNSEEN]
    done = []
    results = bench.run(tiny_model.model, tiny_model.tokenizer, texts, FAST, on_row=done.append)
    return texts, results, done


def test_memorised_rows_are_reconstructed_and_the_unseen_one_is_not(measured, tiny_model):
    texts, results, done = measured
    assert [r.row for r in results] == [0, 1, 2, 3]
    assert sorted(r.row for r in done) == [0, 1, 2, 3]  # every row reported as it finished
    for r, text in zip(results[:3], texts):
        assert r.reconstructed and r.stored and r.converged
        assert r.token_accuracy == 1.0 and r.decode_min_margin >= FAST.verify_margin
        assert r.tokens == len(tiny_model.tokenizer(text, add_special_tokens=False).input_ids)
        assert r.chars == len(text)
    unseen = results[3]
    assert not unseen.reconstructed and not unseen.stored and not unseen.converged
    assert unseen.steps == FAST.max_steps and unseen.token_accuracy < 1.0


def test_summary_and_paper_table(measured):
    _, results, _ = measured
    summary = bench.summarise(results, wall_seconds=8.0)
    assert summary["rows"] == 4 and summary["reconstructed"] == 3 and summary["stored"] == 3
    assert summary["avg_acc"] == pytest.approx(sum(r.token_accuracy for r in results) / 4)
    assert summary["wall_seconds_per_row"] == 2.0
    table = bench.paper_table(summary, "tiny")
    assert "| tiny | 4 |" in table and "| 3/4 | 3/4 |" in table
    assert len(bench.rows_table(results).splitlines()) == 2 + 4


def test_plot_is_a_png(measured):
    _, results, _ = measured
    png = bench.plot(results, title="test")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


@pytest.mark.parametrize("probes", [1, 3])
def test_capacity_bisects_to_the_resolution(tiny_model, probes):
    ids = tiny_model.tokenizer(UNSEEN, add_special_tokens=False).input_ids
    rounds = []
    (found,) = bench.capacity(tiny_model.model, [(7, ids)], FAST, probes=probes, resolution=2,
                              on_round=lambda n, results: rounds.append(n))
    assert found.row == 7 and found.row_tokens == len(ids)
    assert found.shortest_failed - found.longest_stored <= 2
    assert rounds == list(range(1, len(rounds) + 1)) and len(rounds) >= 2
    stored = [t.tokens for t in found.trials if t.stored]
    failed = [t.tokens for t in found.trials if not t.stored]
    assert found.longest_stored == max(stored, default=0)
    assert found.shortest_failed in failed + [len(ids)]
    assert all(0 < t.tokens < len(ids) for t in found.trials)


def test_capacity_of_a_prefix_that_fits_is_found(tiny_model):
    """A memorised passage followed by unseen text: at least the passage's first tokens fit."""
    tokenizer = tiny_model.tokenizer
    ids = tokenizer(PASSAGES[1] + " " + UNSEEN, add_special_tokens=False).input_ids
    (found,) = bench.capacity(tiny_model.model, [(0, ids)], FAST, resolution=4)
    assert found.longest_stored >= 4 and found.shortest_failed <= len(ids)


def test_cli_prints_the_table_and_writes_json_and_plot(run, tiny_model_dir, tmp_path):
    corpus = write_csv(tmp_path / "c.csv", PASSAGES[:2] + [UNSEEN, "unused row"])
    status, out, err = run("bench", corpus, "--rows", "3", "--model", tiny_model_dir, *FAST_ARGS,
                           "--json", tmp_path / "r.json", "--plot", tmp_path / "r.png")
    assert status == 0, err
    assert "| 2/3 | 2/3 |" in out
    assert err.count("llmzip bench: row") == 3
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["summary"]["rows"] == 3 and document["corpus"] == "c.csv"
    assert document["model"]["weights_fingerprint"] and document["config"]["max_steps"] == 120
    assert [r["row"] for r in document["rows"]] == [0, 1, 2]
    assert document["rows"][2]["decode_min_margin"] is None  # strict JSON: no -Infinity
    assert document["capacity"] == []
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")


def test_start_selects_a_slice_and_keeps_file_row_numbers(run, tiny_model_dir, tmp_path):
    corpus = write_csv(tmp_path / "c.csv", [UNSEEN, UNSEEN, PASSAGES[0], PASSAGES[1], UNSEEN])
    assert bench.read_corpus(corpus, rows=2, start=2) == PASSAGES[:2]
    status, out, err = run("bench", corpus, "--start", "2", "--rows", "2", "--model", tiny_model_dir, *FAST_ARGS,
                           "--json", tmp_path / "r.json")
    assert status == 0, err
    assert "| 2/2 | 2/2 |" in out
    assert [r["row"] for r in json.loads((tmp_path / "r.json").read_text())["rows"]] == [2, 3]
    with pytest.raises(InputError, match="no data rows from row 5 on"):
        bench.read_corpus(corpus, rows=2, start=5)


def test_cli_capacity_line(run, tiny_model_dir, tmp_path):
    corpus = write_csv(tmp_path / "c.csv", [UNSEEN])
    status, out, err = run("bench", corpus, "--model", tiny_model_dir, *FAST_ARGS, "--capacity", "--resolution", "8")
    assert status == 0, err
    assert "capacity: row 0" in out and "longest stored prefix" in out
    assert "llmzip bench: capacity round 1: stored-failed row 0:" in err


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        (b"text\nhello\n", "no column 'chunk'"),
        (b"chunk\n", "no data rows"),
        (b"chunk\n\xff\xfe\n", "not UTF-8 text"),
        (b'chunk\n""\n', "empty 'chunk' value"),
        (b"chunk\n" + b"x" * (bench.MAX_CSV_FIELD + 10) + b"\n", "field larger than field limit"),
    ],
    ids=["missing", "no-column", "no-rows", "not-utf8", "empty-value", "huge-field"],
)
def test_bad_corpus_is_one_line_and_exit_1(run, tmp_path, content, message):
    path = tmp_path / "corpus.csv"
    if content is not None:
        path.write_bytes(content)
    status, out, err = run("bench", path, "--model", tmp_path / "no-model-is-loaded")
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and message in err and err.startswith("llmzip: error:")
    with pytest.raises(InputError):
        bench.read_corpus(path, rows=5)


def test_existing_json_is_refused_before_any_training(run, tmp_path):
    corpus = write_csv(tmp_path / "c.csv", PASSAGES)
    (tmp_path / "r.json").write_text("keep me")
    status, _, err = run("bench", corpus, "--model", tmp_path / "no-model", "--json", tmp_path / "r.json")
    assert status == 1 and "already exists" in err
    assert (tmp_path / "r.json").read_text() == "keep me"
