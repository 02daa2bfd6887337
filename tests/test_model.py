"""The model layer: spec resolution, pinned loading, and identities that catch any change."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from llmzip.errors import ModelError, ModelMismatchError
from llmzip.model import ModelIdentity, load_model, resolve_spec, tokenizer_fingerprint

PINNED = "google/gemma-3-270m@" + "0123456789abcdef0123456789abcdef01234567"


def copy_model(src, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def test_identity_is_stable_across_loads(tiny_model_dir, tiny_model):
    again = load_model(str(tiny_model_dir))
    assert again.identity == tiny_model.identity
    assert tiny_model.identity.differences(again.identity) == []


def test_identity_round_trips_through_a_plain_dict(tiny_model):
    as_dict = tiny_model.identity.to_dict()
    assert all(isinstance(v, (str, int, type(None))) for v in as_dict.values())
    assert ModelIdentity.from_dict(json.loads(json.dumps(as_dict))) == tiny_model.identity


def test_identity_from_a_mistyped_dict_is_a_model_error(tiny_model):
    broken = tiny_model.identity.to_dict() | {"hidden_size": "64"}
    with pytest.raises(ModelError, match="hidden_size"):
        ModelIdentity.from_dict(broken)
    with pytest.raises(ModelError):
        ModelIdentity.from_dict(["not", "a", "dict"])


def test_one_changed_weight_changes_the_fingerprint(tiny_model_dir, tiny_model, tmp_path):
    changed_dir = copy_model(tiny_model_dir, tmp_path)
    weights = load_file(changed_dir / "model.safetensors")
    name = "model.layers.1.mlp.down_proj.weight"
    weights[name][3, 7] = torch.nextafter(weights[name][3, 7], torch.tensor(1.0))  # one ulp
    save_file(weights, changed_dir / "model.safetensors", metadata={"format": "pt"})

    changed = load_model(str(changed_dir)).identity
    assert changed.weights_fingerprint != tiny_model.identity.weights_fingerprint
    assert changed.tokenizer_fingerprint == tiny_model.identity.tokenizer_fingerprint
    with pytest.raises(ModelMismatchError, match="weights_fingerprint") as error:
        changed.check_matches(tiny_model.identity)
    # Both values are named so a user can tell which model made the archive.
    assert changed.weights_fingerprint in str(error.value)
    assert tiny_model.identity.weights_fingerprint in str(error.value)


def test_one_changed_token_changes_the_tokenizer_fingerprint(tiny_model_dir, tiny_model, tmp_path):
    changed_dir = copy_model(tiny_model_dir, tmp_path)
    path = changed_dir / "tokenizer.json"
    spec = json.loads(path.read_text())
    vocab = spec["model"]["vocab"]
    first, second = (next(t for t, i in vocab.items() if i == n) for n in (300, 301))
    vocab[first], vocab[second] = 301, 300  # two tokens swap ids
    path.write_text(json.dumps(spec))

    changed = load_model(str(changed_dir)).identity
    assert changed.tokenizer_fingerprint != tiny_model.identity.tokenizer_fingerprint
    assert changed.weights_fingerprint == tiny_model.identity.weights_fingerprint


def test_a_different_dtype_changes_the_identity(tiny_model_dir, tiny_model):
    bf16 = load_model(str(tiny_model_dir), dtype=torch.bfloat16)
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    fields = {d.split(":")[0] for d in bf16.identity.differences(tiny_model.identity)}
    assert fields == {"weights_fingerprint", "dtype"}


def test_loaded_model_is_frozen_and_in_eval_mode(tiny_model):
    assert not tiny_model.model.training
    assert not any(p.requires_grad for p in tiny_model.model.parameters())
    assert tiny_model.identity.attn_implementation == "sdpa"
    assert (tiny_model.identity.hidden_size, tiny_model.identity.vocab_size) == (64, 512)


@pytest.mark.parametrize("spec", ["google/gemma-3-270m", "google/gemma-3-270m@main", "google/gemma-3-270m@v1.0"])
def test_floating_revisions_are_refused(spec):
    with pytest.raises(ModelError, match="40-hex commit"):
        resolve_spec(spec)


def test_floating_revisions_are_allowed_when_asked():
    source = resolve_spec("google/gemma-3-270m@main", allow_floating_revision=True)
    assert (source.kind, source.id, source.revision) == ("hub", "google/gemma-3-270m", "main")


def test_a_pinned_hub_model_is_not_downloaded_offline():
    assert resolve_spec(PINNED).revision == PINNED.split("@")[1]
    with pytest.raises(ModelError, match="cannot load model from google/gemma-3-270m"):
        load_model(PINNED)


@pytest.mark.parametrize("spec", ["no/such/thing", "???", "", "missing.gguf"])
def test_unresolvable_specs_name_what_was_tried(spec):
    with pytest.raises(ModelError, match="model spec") as error:
        resolve_spec(spec)
    assert "\n" not in str(error.value)


def test_a_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        load_model(str(tmp_path))


def test_broken_weights_give_a_model_error(tiny_model_dir, tmp_path):
    broken = copy_model(tiny_model_dir, tmp_path)
    (broken / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(ModelError, match="cannot load model"):
        load_model(str(broken))


def test_fixture_model_regenerates(tiny_model_dir, tmp_path):
    """The script makes the committed fixture: every file bit for bit except the trained
    weights, which agree to 1e-4. Training's last bits move with the torch build and CPU
    (measured: up to 8e-6 after a torch/transformers upgrade), so bit-for-bit weights
    would fail on a correct script; the committed weights are what archives were made with."""
    from safetensors.torch import load_file

    script = tiny_model_dir.parent / "make_tiny_model.py"
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, capture_output=True)
    for committed in sorted(tiny_model_dir.iterdir()):
        if committed.name == "model.safetensors":
            made, kept = load_file(tmp_path / committed.name), load_file(committed)
            assert made.keys() == kept.keys()
            for name in kept:
                torch.testing.assert_close(made[name], kept[name], rtol=0, atol=1e-4, msg=name)
        else:
            assert (tmp_path / committed.name).read_bytes() == committed.read_bytes(), committed.name


@pytest.mark.slow
def test_default_model_generates_and_has_the_same_identity_in_another_process(default_model):
    tokenizer, model = default_model.tokenizer, default_model.model
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "France" in text or "Paris" in text, text

    code = "import json; from llmzip.model import load_model; print(json.dumps(load_model('default').identity.to_dict()))"
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=os.environ.copy()
    )
    other = ModelIdentity.from_dict(json.loads(result.stdout.strip().splitlines()[-1]))
    assert other == default_model.identity
    assert default_model.identity.source_sha256 == (
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    )


def test_a_broken_tokenizer_gives_a_model_error(tiny_model_dir, tmp_path):
    broken = copy_model(tiny_model_dir, tmp_path)
    (broken / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": {}, "merges": ["a b"]}}')
    with pytest.raises(ModelError, match="cannot load model"):
        load_model(str(broken))


def _tokenizer_with(tiny_model_dir, tmp_path, rewrite):
    """The fixture tokenizer after ``rewrite(tokenizer_json_text) -> text``."""
    from transformers import AutoTokenizer

    folder = copy_model(tiny_model_dir, tmp_path)
    path = folder / "tokenizer.json"
    path.write_text(rewrite(path.read_text()))
    return AutoTokenizer.from_pretrained(folder)


def test_tokenizer_fingerprint_ignores_how_the_json_is_serialised(tiny_model_dir, tiny_model, tmp_path):
    def reserialise(text):
        document = json.loads(text)
        reordered = dict(reversed(list(document.items())))
        reordered["model"] = dict(reversed(list(document["model"].items())))
        reordered["model"]["merges"] = [" ".join(pair) if isinstance(pair, list) else pair
                                        for pair in document["model"]["merges"]]  # the older spelling
        return json.dumps(reordered, indent=3)

    tokenizer = _tokenizer_with(tiny_model_dir, tmp_path, reserialise)
    assert tokenizer_fingerprint(tokenizer) == tiny_model.identity.tokenizer_fingerprint


def test_one_changed_merge_changes_the_tokenizer_fingerprint(tiny_model_dir, tiny_model, tmp_path):
    def change_merge(text):
        document = json.loads(text)
        merges = document["model"]["merges"]
        merges[0], merges[1] = merges[1], merges[0]
        return json.dumps(document)

    tokenizer = _tokenizer_with(tiny_model_dir, tmp_path, change_merge)
    assert tokenizer_fingerprint(tokenizer) != tiny_model.identity.tokenizer_fingerprint


def test_fingerprints_match_codec_md_test_vectors(tiny_model):
    """format/CODEC.md, "Fingerprints", gives the fixture model's fingerprints as test vectors."""
    assert (tiny_model.identity.weights_fingerprint, tiny_model.identity.tokenizer_fingerprint) == (
        "497036a8cc9c0048", "b7236a5e64b88b9a")


def test_identity_round_trips_through_the_compact_header_form(tiny_model):
    identity = tiny_model.identity
    header = identity.to_header()
    assert all(len(key) == 1 for key in header) and isinstance(header["W"], bytes) and len(header["W"]) == 8
    # A local model is recorded by its directory name, never its path (issue 32): the rest is the identity.
    assert ModelIdentity.from_header(header, identity.hidden_size) == dataclasses.replace(
        identity, source_id=Path(identity.source_id).name)


def test_an_interrupt_that_a_library_turns_into_another_error_stays_an_interrupt(tiny_model_dir, monkeypatch):
    """A SIGTERM (llmzip raises a KeyboardInterrupt) landing inside torch's mode stack made
    its cleanup raise "trying to pop from empty mode stack"; that was reported as a model
    that cannot load (exit 1) instead of an interrupt (exit 130/143)."""
    import transformers

    interrupt = KeyboardInterrupt()

    def interrupted_load(*args, **kwargs):
        try:
            raise interrupt
        finally:
            raise RuntimeError("trying to pop from empty mode stack")  # noqa: B012 - what torch's cleanup did

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", interrupted_load)
    with pytest.raises(KeyboardInterrupt) as raised:
        load_model(str(tiny_model_dir))
    assert raised.value is interrupt


def test_a_plain_load_error_is_still_a_model_error(tiny_model_dir, monkeypatch):
    import transformers

    def broken_load(*args, **kwargs):
        raise RuntimeError("bad weights")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", broken_load)
    with pytest.raises(ModelError, match="bad weights"):
        load_model(str(tiny_model_dir))


def test_a_killed_conversions_scratch_is_removed_next_time(tmp_path):
    """Issue 32, item 8: SIGKILL leaves a conversion's scratch directory (with a ~240 MB
    GGUF) in the cache; the next conversion removes those an hour old, and leaves younger
    ones, which may belong to a conversion running in another process."""
    import os
    import time

    from llmzip.model import SCRATCH_PREFIX, STALE_SCRATCH_SECONDS, remove_stale_scratch

    old, young, converted = tmp_path / f"{SCRATCH_PREFIX}old", tmp_path / f"{SCRATCH_PREFIX}young", tmp_path / "gguf-x"
    for directory in (old, young, converted):
        directory.mkdir()
        (directory / "model.gguf").write_bytes(b"x")
    then = time.time() - STALE_SCRATCH_SECONDS - 60
    os.utime(old, (then, then))
    os.utime(converted, (then, then))
    remove_stale_scratch(tmp_path)
    assert not old.exists() and young.exists() and converted.exists()
