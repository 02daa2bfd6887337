"""Shared test set-up: offline switches, the fixture model, and the default model.

The offline switches are set before anything imports transformers, so a test that would
download from a hub fails loudly instead.
"""

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL_DIR = REPO / "fixtures" / "tiny-gemma3"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    return TINY_MODEL_DIR


@pytest.fixture(scope="session")
def tiny_model():
    """The fixture model loaded through the model layer (fp32, sdpa), shared by tests."""
    from llmzip.model import load_model

    return load_model(str(TINY_MODEL_DIR))


@pytest.fixture(scope="session")
def default_model():
    """Gemma 3 270M via the model layer; converts into the cache on first use (~2.5 min)."""
    from llmzip.model import load_model

    return load_model("default")


@pytest.fixture
def run(capfd):
    """``run(*argv)`` -> (exit status, stdout, stderr) of the CLI, in this process."""
    from llmzip.cli import main

    def run(*args):
        with pytest.raises(SystemExit) as stop:
            main([str(a) for a in args])
        out, err = capfd.readouterr()
        return stop.value.code, out, err

    return run
