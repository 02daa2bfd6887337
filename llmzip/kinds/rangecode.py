"""What the range-coded kinds (``lm``, ``memory-int-coded``, ``memory-int-lm``) share: ``constriction``'s
coder, models built from integer counts, and the coded words' byte layout.

Both sides of a code build a model from the same integers with the same IEEE float64
divisions, and ``constriction`` quantises a float model the same way on every machine,
so an encoder and a decoder on different machines agree bit for bit (format/CODEC.md).
"""

from __future__ import annotations


def categorical(probs):
    """A ``constriction`` categorical model of float64 probabilities (summing to 1)."""
    import constriction

    return constriction.stream.model.Categorical(probs, perfect=False)


def counts_model(counts):
    """The categorical model of integer ``counts`` (each > 0): count / total in float64."""
    import numpy

    counts = numpy.asarray(counts, dtype=numpy.float64)
    return categorical(counts / counts.sum())


def pack_words(words) -> bytes:
    """The coder's 32-bit words as little-endian bytes, up to 3 trailing zero bytes of
    the last word dropped."""
    raw = words.astype("<u4").tobytes()
    keep = len(raw)
    while keep > len(raw) - 3 and keep > 1 and raw[keep - 1] == 0:
        keep -= 1
    return raw[:keep]


def unpack_words(coded: bytes):
    """The (n,) uint32 words of :func:`pack_words`' bytes (dropped zero bytes restored)."""
    import numpy

    padded = coded + b"\0" * (-len(coded) % 4)
    return numpy.frombuffer(padded, dtype="<u4").astype(numpy.uint32)
