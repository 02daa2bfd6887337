"""Model mismatch (issue 7, part 5): weights changed by one value, another tokenizer,
another dtype, another model. ``extract`` and ``verify`` refuse before decoding a chunk
or writing a byte, and the message names every field that differs.
"""

import json
import shutil
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file, save_file

from llmzip import codec
from llmzip import decode as decode_module
from llmzip.errors import ModelMismatchError
from llmzip.model import load_model
from reliability_helpers import archive_path  # noqa: F401 - a fixture
from reliability_helpers import CLEAN, TINY_MODEL_DIR, classify, real_archive, run_cli, tally_fixture


def one_weight_changed(folder):
    weights = load_file(folder / "model.safetensors")
    weights["model.norm.weight"][0] += 2.0 ** -10
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def tokenizer_changed(folder):
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["\u0120fox"], vocab["\u0120quick"] = vocab["\u0120quick"], vocab["\u0120fox"]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))


def other_model(folder):
    """Same architecture and tokenizer, weights from another seed: a different model."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(folder)


VARIANTS = {
    "one weight changed": (one_weight_changed, ["weights_fingerprint"]),
    "another tokenizer": (tokenizer_changed, ["tokenizer_fingerprint"]),
    "another model": (other_model, ["weights_fingerprint"]),
}


tally = tally_fixture("model mismatch")


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any chunk reaches the decoder."""
    def refuse(*args, **kwargs):
        raise AssertionError("decoded a chunk with the wrong model")
    monkeypatch.setattr(decode_module, "decode_batch", refuse)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("command", ["verify", "extract"])
def test_a_different_model_is_refused_before_anything_is_written(
    tally, archive_path, tmp_path, no_decoding, variant, command
):
    change, fields = VARIANTS[variant]
    folder = tmp_path / "model"
    shutil.copytree(TINY_MODEL_DIR, folder)
    change(folder)
    output = tmp_path / "doc.txt"
    output.write_bytes(b"precious")  # -f may replace it only with a verified restore
    extra = ["-o", output, "-f"] if command == "extract" else []
    code, err, _ = run_cli([command, archive_path, "--model", folder, *extra])
    outcome = classify(code, err, None, None)
    tally.add(variant, command, outcome)
    assert outcome == CLEAN, err
    assert all(field in err for field in fields), err
    assert output.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.txt", "model"]  # no temp file either


@pytest.mark.parametrize("method", ["decompress", "verify"])
def test_another_dtype_is_refused(tally, tiny_model, no_decoding, method):
    """The archive says float32; a bfloat16 load of the same files differs in dtype and
    in the weights' fingerprint (which covers dtypes), and both are named."""
    bf16 = load_model(str(TINY_MODEL_DIR), dtype=torch.bfloat16)
    decompressor = codec.LmzDecompressor(loaded=bf16)
    with pytest.raises(ModelMismatchError) as error:
        getattr(decompressor, method)(real_archive(tiny_model))
    tally.add("bfloat16 load (API)", method, CLEAN)
    assert "dtype: 'bfloat16' != 'float32'" in str(error.value)
    assert "weights_fingerprint" in str(error.value)


def test_the_mismatch_check_runs_before_decoding(tiny_model):
    """The same archive with the right model does reach the decoder (the guard above is
    not vacuous)."""
    with mock.patch.object(decode_module, "decode_batch", wraps=decode_module.decode_batch) as decode:
        codec.LmzDecompressor(loaded=tiny_model).verify(real_archive(tiny_model))
    assert decode.call_count >= 1
