"""Training groups: which chunks train together, the journal that makes them resumable,
and training one group.

The eligible chunks of an input train in fixed groups of ``batch_size x group_batches``
(group k = the k-th run of that many eligible chunks), because batch mates change a vector
in its last bits: fixed groups make a resumed run train every chunk with the same mates as
an uninterrupted one, hence identical archives. A group of several batches keeps the batch
full: a chunk that stops hands its slot to the next one (continuous batching,
:mod:`llmzip.train`), so only a group's last chunks train in a thinning batch. The price is
coarser resume and fewer units for workers.

A group is also the unit of work of a *group runner* (``runner(compressor, chunks,
[(number, group, budgets), ...], on_step)`` yielding ``(number, entries)`` in any order;
``budgets`` are the group's step budgets, :meth:`llmzip.codec.LmzCompressor.step_budgets`):
:func:`train_groups_here` trains in this process, :class:`llmzip.distributed.WorkerPool`
on Ray workers; both call :func:`train_group`. A group's result depends only on its chunks
and the settings.
"""

from __future__ import annotations

from pathlib import Path

from llmzip import chunking
from llmzip.journal import Journal, JournalEntry


def plan(chunks, batch_size: int, group_batches: int, indices=None) -> list[list[int]]:
    """The fixed groups: chunk indices of consecutive runs of eligible chunks (of those in
    ``indices``, when given)."""
    eligible = [index for index in (range(len(chunks)) if indices is None else indices) if chunks[index].eligible]
    size = batch_size * group_batches
    return [eligible[start : start + size] for start in range(0, len(eligible), size)]


def train_group(trainer, tokenizer, chunks, group: list[int], budgets: list[int], on_step=None) -> list[JournalEntry]:
    """Train one group with ``trainer`` (a :class:`llmzip.train.MemoryTrainer`), each chunk
    for at most its step budget in ``budgets``; keep a vector only if the decoder restored
    the chunk's exact bytes from its stored form."""
    token_lists = [chunks[index].token_ids for index in group]
    entries = []
    for index, ids, result in zip(group, token_lists, trainer.train(token_lists, budgets=budgets, on_step=on_step)):
        # n_tokens <= length is what extract checks before decoding (check_token_counts).
        keep = (result.accepted and len(ids) <= len(chunks[index].data)
                and ids_restore(tokenizer, ids, chunks[index].data))
        entries.append(JournalEntry(index=index, vector=result.payload if keep else None, n_tokens=len(ids),
                                    min_margin=float(result.decode_min_margin)))
    return entries


def ids_restore(tokenizer, ids, expected: bytes) -> bool:
    """Invariant 1, end to end (docs/DESIGN.md): the decoded ids go through the same
    detokenisation extract uses, so a tokenizer that decodes differently than chunking
    assumed cannot slip a wrong vector or code into an archive."""
    return chunking.text_bytes(chunking.detokenize(tokenizer, ids)) == expected


def train_groups_here(compressor, chunks, todo, on_step):
    """The default group runner: train each ``(number, group, budgets)`` in turn in this process."""
    for number, group, budgets in todo:
        yield number, compressor.train_group(chunks, group, budgets, on_step)


def train_all(compressor, chunks, journal_path: str | Path | None, journal_key: dict,
              on_step=None, on_chunk=None, *, indices=None, first_group: int = 0
              ) -> tuple[dict[int, JournalEntry], int, int]:
    """Train every group of ``chunks`` (of the chunks at ``indices``, when given) with
    ``compressor.group_runner``, resuming the groups a matching journal at
    ``journal_path`` holds and journaling each group as it arrives; the groups are
    numbered from ``first_group`` (a later round of the same journal continues the
    numbers). Returns (chunk index -> entry, chunks resumed from the journal, groups
    planned). ``on_chunk(done, total)`` counts finished chunks; resumed ones are reported
    once, before training, so a progress bar can leave them out of its rate."""
    config = compressor.train_config
    groups = plan(chunks, config.batch_size, config.group_batches, indices)
    total = sum(len(group) for group in groups)
    journal = Journal(Path(journal_path), journal_key) if journal_path is not None and groups else None
    results: dict[int, JournalEntry] = {}
    resumed = 0
    if on_chunk is not None:
        on_chunk(0, total)  # the total is known before the first group finishes
    try:
        todo = []
        for number, group in enumerate(groups, start=first_group):
            entries = journal.groups.get(number) if journal is not None else None
            if entries is not None and [e.index for e in entries] == group:
                resumed += len(group)
                results.update((entry.index, entry) for entry in entries)
            else:
                todo.append((number, group, compressor.step_budgets(chunks, group)))
        done = resumed
        if done and on_chunk is not None:
            on_chunk(done, total)
        # The runner may finish groups in any order (workers): each is journaled as it arrives.
        for number, entries in compressor.group_runner(compressor, chunks, todo, on_step):
            if journal is not None:
                journal.append(number, entries)
            results.update((entry.index, entry) for entry in entries)
            done += len(entries)
            if on_chunk is not None:
                on_chunk(done, total)
    finally:
        if journal is not None:
            journal.close()
    return results, resumed, len(groups)
