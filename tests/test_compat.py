"""Archives written by released versions (fixtures/compat/) extract byte for byte.

docs/DESIGN.md, invariant 7: every archive ever written stays extractable. The default-model
archive needs Gemma 3 270M, so its test is marked slow (it runs in CI too).
"""

import json
from pathlib import Path

import pytest

from llmzip import codec, container

COMPAT = Path(__file__).resolve().parent.parent / "fixtures" / "compat"


def test_tiny_model_archive_from_0_1_0_extracts_exactly(tiny_model):
    archive = (COMPAT / "tiny-model.lmz").read_bytes()
    assert container.unpack(archive).version == (1, 0)
    decompressor = codec.LmzDecompressor(loaded=tiny_model)
    assert decompressor.decompress(archive) == (COMPAT / "tiny-model.txt").read_bytes()
    checks = decompressor.verify(archive)
    assert [c.kind for c in checks] == ["memory"] * 3 + ["zstd"]
    assert all(c.decode_margin >= 0.25 for c in checks if c.kind == "memory")


@pytest.mark.parametrize("name, version, kinds", [("tiny-model-0.2.0.lmz", (2, 0), ["memory"] * 3 + ["zstd"]),
                                                   ("tiny-model-0.2.0-lm.lmz", (2, 1), ["lm", "zstd"]),
                                                   ("tiny-model-lm-scheme2.lmz", (2, 1), ["lm", "zstd"]),
                                                   ("tiny-model-lm-scheme3.lmz", (2, 1), ["lm", "zstd"])])
def test_tiny_model_archives_from_0_2_0_extract_exactly(tiny_model, name, version, kinds):
    archive = (COMPAT / name).read_bytes()
    assert container.unpack(archive).version == version
    decompressor = codec.LmzDecompressor(loaded=tiny_model)
    assert [c.kind for c in decompressor.verify(archive)] == kinds
    assert decompressor.decompress(archive) == (COMPAT / "tiny-model.txt").read_bytes()


def test_model_free_archive_of_2_5_extracts_exactly_without_a_model():
    """Format 2.5 (issue 32): binary input stored whole, the header naming no model, so
    extract loads none (this decompressor has no model to load)."""
    archive = (COMPAT / "model-free-2.5.lmz").read_bytes()
    unpacked = container.unpack(archive)
    assert unpacked.version == (2, 5) and unpacked.header.model_free
    decompressor = codec.LmzDecompressor(model="no such model")
    assert [c.kind for c in decompressor.verify(archive)] == ["stored"]
    assert decompressor.decompress(archive) == (COMPAT / "model-free-2.5.bin").read_bytes()


@pytest.mark.parametrize("name, source, kind", [("whole-input-2.6-stored.lmz", "model-free-2.5.bin", "stored"),
                                                ("whole-input-2.6-zstd.lmz", "tiny-model.txt", "zstd")])
def test_whole_input_archives_of_2_6_extract_exactly_without_a_model(name, source, kind):
    """Format 2.6 (issue 32): the whole input stored or in one zstd frame, no records."""
    archive = (COMPAT / name).read_bytes()
    unpacked = container.unpack(archive)
    assert unpacked.version == (2, 6) and unpacked.header.model_free
    assert archive[10:12] == b"\x03\x00"  # must-understand MODEL_FREE | WHOLE_INPUT
    decompressor = codec.LmzDecompressor(model="no such model")
    assert [c.kind for c in decompressor.verify(archive)] == [kind]
    assert decompressor.decompress(archive) == (COMPAT / source).read_bytes()


def test_0_1_0_archive_is_checked_with_the_0_1_0_fingerprints(tiny_model):
    """The archive records fingerprint algorithm 1 (128-bit, serialisation-dependent); the
    loaded model's algorithm-1 fingerprints are computed to compare with it."""
    archive = container.unpack((COMPAT / "tiny-model.lmz").read_bytes())
    recorded = archive.header.model
    assert "fingerprint_version" not in recorded and len(recorded["weights_fingerprint"]) == 32
    legacy = tiny_model.identity_for(1)
    assert legacy.weights_fingerprint == recorded["weights_fingerprint"]
    assert legacy.tokenizer_fingerprint == recorded["tokenizer_fingerprint"]


def test_compat_archives_are_described_by_info(run):
    for name in ("tiny-model.lmz", "default-model.lmz"):
        code, out, _ = run("info", "--json", COMPAT / name)
        assert code == 0
        [described] = json.loads(out)
        assert described["format_version"] == "1.0" and described["chunks"]["zstd"] == 1


@pytest.mark.slow
def test_default_model_archive_from_0_1_0_extracts_exactly(default_model):
    archive = (COMPAT / "default-model.lmz").read_bytes()
    decompressor = codec.LmzDecompressor(loaded=default_model)
    checks = decompressor.verify(archive)
    assert [c.kind for c in checks].count("memory") == 12
    assert decompressor.decompress(archive) == (COMPAT / "default-model.txt").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("name, version", [("default-model-memory-int", (2, 2)), ("default-model-memory-int-coded", (2, 3)),
                                           ("default-model-memory-int-lm", (2, 4))])
def test_default_model_memory_int_archives_extract_exactly(default_model, name, version):
    """The default model's defaults of their day: 4-bit vectors around its fitted start
    (format 2.2), then range coded with corrections (2.3), then with the corrections coded
    under the model (2.4: 13 vectors, 7-16 corrections each). All hold the same text."""
    archive = (COMPAT / f"{name}.lmz").read_bytes()
    assert container.unpack(archive).version == version
    restored = codec.LmzDecompressor(loaded=default_model).decompress(archive)
    assert restored == (COMPAT / "default-model-memory-int.txt").read_bytes()
