"""llmzip: a text archiver whose archive stores one trained memory vector per chunk.

This module only re-exports. ``import llmzip`` must stay fast and must not import torch,
so everything that needs the model is imported lazily on first attribute access.
"""

from importlib import metadata as _metadata

from llmzip.errors import (
    ChecksumError,
    FormatError,
    InputError,
    LimitError,
    LmzError,
    ModelError,
    ModelMismatchError,
    UnsupportedVersionError,
)

try:
    __version__ = _metadata.version("llmzip")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

# name -> module that defines it; imported on first use (PEP 562).
_LAZY = {
    "compress": "llmzip.codec",
    "decompress": "llmzip.codec",
    "export": "llmzip.codec",
    "LmzCompressor": "llmzip.codec",
    "LmzDecompressor": "llmzip.codec",
    "TrainConfig": "llmzip.config",
    "read_header": "llmzip.container",
    "load_model": "llmzip.model",
    "model_directory": "llmzip.model",
    "ModelIdentity": "llmzip.model",
}


def __getattr__(name):
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'llmzip' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)


__all__ = [
    "__version__",
    "ChecksumError",
    "FormatError",
    "InputError",
    "LimitError",
    "LmzError",
    "ModelError",
    "ModelMismatchError",
    "UnsupportedVersionError",
    *_LAZY,
]
