"""Every error llmzip raises on purpose is an ``LmzError``.

Callers catch ``LmzError`` to handle any llmzip failure; the CLI turns one into a
one-line message and exit status 1. The subclasses say *which* promise was broken, so
tests (and careful callers) can tell a corrupt archive from a wrong model.
"""


class LmzError(Exception):
    """Base class of every llmzip error."""


class FormatError(LmzError):
    """The archive bytes are not a well-formed .lmz container (bad magic, truncation,
    malformed msgpack, wrong field types, inconsistent fields)."""


class UnsupportedVersionError(FormatError):
    """The archive uses a major version or a must-understand flag this reader lacks."""


class LimitError(FormatError):
    """The archive declares a size, count or depth beyond the format's hard limits."""


class ChecksumError(FormatError):
    """Stored or restored bytes do not match their recorded xxh64 checksum."""


class ModelError(LmzError):
    """A model spec cannot be resolved or loaded (missing files, floating revision,
    unknown form)."""


class ModelMismatchError(LmzError):
    """The loaded model is not the one the archive was made with."""


class InputError(LmzError):
    """Input or output files cannot be used as asked (missing, unreadable, exists
    without --force, archive bytes to a terminal)."""
