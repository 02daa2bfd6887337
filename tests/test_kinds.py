"""The chunk-kind registry: a kind is one module plus one registry line.

``ReversedKind`` below is defined here, in the test suite only: it stores a chunk's bytes
reversed. Registering it is one line (``kinds.KINDS.append``); the container, codec,
``info`` and ``verify`` then handle it with no other change.
"""

from dataclasses import dataclass

import pytest

from llmzip import codec, container, kinds
from llmzip.errors import FormatError
from llmzip.kinds.base import Kind, Restored
from llmzip.kinds.memory import MemoryChunk
from llmzip.kinds.zstd import FallbackChunk


@dataclass(frozen=True)
class ReversedChunk:
    stored: bytes  # the chunk's bytes, reversed
    check: int

    @property
    def length(self) -> int:
        return len(self.stored)


class ReversedKind(Kind):
    name = "reversed"
    code = 200
    chunk_type = ReversedChunk
    written = True

    def encode_fields(self, chunk, ctx):
        return chunk.stored

    def decode_fields(self, fields, length, check, ctx, where):
        if fields.nbytes != length:
            raise FormatError(f"{where}: a reversed record holds its {length} bytes")
        return ReversedChunk(bytes(fields), check)

    def stored_bytes(self, chunk):
        return len(chunk.stored)

    def restore(self, items, loaded, archive, on_done=None, runner=None):
        for index, chunk in items:
            yield Restored(index, chunk.stored[::-1])


@pytest.fixture
def reversed_kind(monkeypatch):
    monkeypatch.setattr(kinds, "KINDS", [*kinds.KINDS, ReversedKind()])  # the one registry line


def test_a_kind_defined_in_one_module_round_trips(reversed_kind, run, tmp_path):
    pieces = [b"stored reversed. ", b"stored with zstd.\n"]
    data = b"".join(pieces)
    header = container.Header(model={"k": "local"}, settings={}, vector_dim=4, input_size=len(data),
                              input_xxh64=container.checksum(data), metadata={})
    chunks = [ReversedChunk(pieces[0][::-1], container.chunk_check(pieces[0])), FallbackChunk(pieces[1])]
    archive = container.pack(header, chunks)

    assert container.unpack(archive).chunks == tuple(chunks)
    assert codec.LmzDecompressor().decompress(archive) == data  # no model kind: no model loads
    info = container.read_header(archive)
    assert info.chunk_counts == {"memory": 0, "zstd": 1, "reversed": 1}
    assert info.stored_bytes["reversed"] == len(pieces[0])

    path = tmp_path / "doc.lmz"
    path.write_bytes(archive)
    code, out, _ = run("verify", path, "-v")
    assert code == 0 and "1 reversed, 1 zstd" in out and "reversed" in out


def test_without_the_registry_line_the_kind_is_unknown(reversed_kind, monkeypatch):
    header = container.Header(model={}, settings={}, vector_dim=4, input_size=3,
                              input_xxh64=container.checksum(b"abc"), metadata={})
    archive = container.pack(header, [ReversedChunk(b"cba", container.chunk_check(b"abc"))])
    monkeypatch.setattr(kinds, "KINDS", [kind for kind in kinds.KINDS if kind.name != "reversed"])
    with pytest.raises(FormatError, match="unknown chunk kind 200"):
        container.unpack(archive)


def test_every_registered_kind_has_its_own_code_and_name():
    assert len({kind.code for kind in kinds.KINDS}) == len({kind.name for kind in kinds.KINDS}) == len(kinds.KINDS)
    assert kinds.of(FallbackChunk(b"x")).name == "zstd"


def test_every_kind_says_whether_the_writer_uses_it():
    """Read-only kinds are the ones in llmzip/kinds/legacy/, and only those."""
    for kind in kinds.KINDS:
        assert isinstance(kind.written, bool), kind.name
        assert kind.written != type(kind).__module__.startswith("llmzip.kinds.legacy."), kind.name
    assert {kind.name for kind in kinds.KINDS if not kind.written} == {"memory-int-coded"}


def test_describe_says_what_a_chunk_holds_without_the_model(reversed_kind):
    vector = MemoryChunk(b"\x00\x3c" * 4, 3, 9, 0, 0.5)
    assert kinds.of(vector).describe(vector) == {"kind": "memory", "length": 9, "stored_bytes": 8, "tokens": 3,
                                                 "margin": 0.5, "corrections": 0, "standalone": True}
    fallback = FallbackChunk(b"abc")
    assert kinds.of(fallback).describe(fallback) == {"kind": "zstd", "length": 3, "stored_bytes": 0, "tokens": None,
                                                     "margin": None, "corrections": 0, "standalone": False}
    reversed_chunk = ReversedChunk(b"cba", 0)
    assert kinds.of(reversed_chunk).describe(reversed_chunk)["stored_bytes"] == 3  # a kind's own, by default
