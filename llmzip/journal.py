"""The resume journal: finished training groups, appended beside the output as they finish.

Training is the slow part of compression (minutes per chunk group on a CPU), so losing it
to Ctrl-C, a kill or a power cut hurts. The codec trains eligible chunks in fixed groups
(group k is always the same chunks) and appends each finished group here. Rerunning the
same command reads the journal, skips the finished groups and retrains at most the one
that was interrupted. Because a group's composition is fixed and training is
deterministic for a given machine, the resumed archive is byte-identical to an
uninterrupted one.

File layout: a msgpack stream. The first object is the key (``{"journal": 1, "key": {...}}``:
input checksum and size, codec settings, model identity); each further object is one
group: ``{"group": k, "chunks": [[index, vector_bytes_or_None, n_tokens, min_margin], ...]}``.
Each append is flushed and fsynced. A torn last record (power loss mid-write) is ignored;
a journal whose key differs, or that cannot be parsed, is not trusted and starts over.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import msgpack

log = logging.getLogger(__name__)

JOURNAL_VERSION = 1
_MAX_JOURNAL_BYTES = 1 << 31  # a journal holds at most one archive's vectors


@dataclass(frozen=True)
class JournalEntry:
    """One trained chunk: its stored vector (None when it fell back to zstd)."""

    index: int
    vector: bytes | None  # the stored form's bytes (fp16 vector, or a memory-int payload), as training returned them
    n_tokens: int
    min_margin: float


class Journal:
    """Append-only record of finished groups for one (input, settings, model) key."""

    def __init__(self, path: Path, key: dict):
        self.path = Path(path)
        self.key = key
        self.groups: dict[int, list[JournalEntry]] = self._read_trusted()
        mode = "ab" if self.groups else "wb"
        self._file = open(self.path, mode)
        if mode == "wb":
            self._write({"journal": JOURNAL_VERSION, "key": key})

    def _read_trusted(self) -> dict[int, list[JournalEntry]]:
        """Finished groups from an existing journal with the same key, else nothing."""
        try:
            if self.path.stat().st_size > _MAX_JOURNAL_BYTES:
                raise ValueError("too large")
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("llmzip: ignoring journal %s (%s)", self.path, exc)
            return {}
        unpacker = msgpack.Unpacker(io.BytesIO(raw), raw=False)
        groups: dict[int, list[JournalEntry]] = {}
        try:
            first = next(unpacker)
            if first != {"journal": JOURNAL_VERSION, "key": self.key}:
                log.warning("llmzip: ignoring journal %s: made for another input, settings or model", self.path)
                return {}
            for record in unpacker:
                group = int(record["group"])
                groups[group] = [
                    JournalEntry(int(i), None if v is None else bytes(v), int(n), float(m))
                    for i, v, n, m in record["chunks"]
                ]
        except (StopIteration, ValueError, TypeError, KeyError, msgpack.UnpackException):
            pass  # a torn or damaged tail: keep the groups read before it
        if groups:
            self._rewrite(groups)  # drop any torn tail before appending after it
        return groups

    def _rewrite(self, groups: dict[int, list[JournalEntry]]) -> None:
        scratch = self.path.with_name(self.path.name + ".tmp")
        with open(scratch, "wb") as handle:
            handle.write(msgpack.packb({"journal": JOURNAL_VERSION, "key": self.key}, use_bin_type=True))
            for group, entries in sorted(groups.items()):
                handle.write(msgpack.packb(_group_record(group, entries), use_bin_type=True))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, self.path)

    def append(self, group: int, entries: list[JournalEntry]) -> None:
        """Record a finished group durably (flush + fsync)."""
        self.groups[group] = entries
        self._write(_group_record(group, entries))

    def _write(self, record: dict) -> None:
        self._file.write(msgpack.packb(record, use_bin_type=True))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def _group_record(group: int, entries: list[JournalEntry]) -> dict:
    return {"group": group, "chunks": [[e.index, e.vector, e.n_tokens, e.min_margin] for e in entries]}
