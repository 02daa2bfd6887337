"""The decode loop's KV cache: transformers' ``DynamicCache`` whose layers append in place.

``DynamicCache`` appends each step's keys and values with ``torch.cat`` of everything cached,
in every layer, so a step copies the whole cache: on the default model, 5 rows at 512
tokens of context, ~100 MB a step, 14-18 ms of a ~120-ms extract step (BENCHMARKS.md, "LM
coding: speed"). Here each layer keeps its keys and values in a buffer with room to grow
along the sequence, writes a step's token into the room and hands attention a view of the
tokens it sees: the same values in the same order, so the same attention inputs; only the
views' strides differ from the concatenated tensors'. A full buffer is re-made with twice
the room, and a sliding-window layer moves its last window of tokens to the front, so the
copying per token is constant instead of growing with the context.

Used by :func:`llmzip.decode.run_rows` for every decode (memory vectors and kind ``lm``),
compress's verification and extract alike.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer


class _Room:
    """(B, H, capacity, D) keys and values; positions ``start:end`` hold the cached tokens."""

    def __init__(self):
        self.keys = self.values = None
        self.start = self.end = 0

    def append(self, keys: torch.Tensor, values: torch.Tensor, keep: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (B, H, s, D) ``keys`` and ``values`` after the cached tokens; returns the
        (B, H, n, D) views of all cached tokens with them (what attention sees), then keeps
        only the last ``keep`` tokens (all if None) for the next step."""
        s = keys.shape[-2]
        if self.keys is None or self.end + s > self.keys.shape[-2]:
            self._remake(keys, values, s)
        self.keys[:, :, self.end : self.end + s] = keys
        self.values[:, :, self.end : self.end + s] = values
        self.end += s
        seen = self.cached()
        if keep is not None:
            self.start = max(self.start, self.end - keep)
        return seen

    def cached(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (B, H, n, D) views of the cached tokens."""
        return self.keys[:, :, self.start : self.end], self.values[:, :, self.start : self.end]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the batch rows ``rows`` (a (b,) long tensor), in their order."""
        if self.keys is not None:
            self.keys, self.values = self.keys[rows], self.values[rows]

    def _remake(self, keys: torch.Tensor, values: torch.Tensor, s: int) -> None:
        """New buffers with room for twice the cached tokens plus ``s``, the cached tokens first."""
        held = self.end - self.start
        shape = (*keys.shape[:2], max(2 * (held + s), 64), keys.shape[-1])
        new_keys, new_values = keys.new_empty(shape), values.new_empty(shape)
        if held:
            new_keys[:, :, :held], new_values[:, :, :held] = self.cached()
        self.keys, self.values, self.start, self.end = new_keys, new_values, 0, held


class _InPlace:
    """What both layers share: their tokens in a :class:`_Room`, and a batch select that
    keeps the rows there (``keys``/``values`` stay views of the room, as the parent reads them)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.room = _Room()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self.room.select(indices)
            self.keys, self.values = self.room.cached()


class AppendLayer(_InPlace, DynamicLayer):
    """A full-attention layer of :class:`DynamicCache` that appends in place."""

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys, self.values = self.room.append(key_states, value_states, keep=None)
        return self.keys, self.values


class SlidingAppendLayer(_InPlace, DynamicSlidingWindowLayer):
    """A sliding-window layer of :class:`DynamicCache` that appends in place: attention
    sees the last ``sliding_window - 1`` cached tokens and the new ones, as in the parent."""

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.cumulative_length += key_states.shape[-2]
        seen = self.room.append(key_states, value_states, keep=self.sliding_window - 1)
        self.keys, self.values = self.room.cached()
        return seen


def append_cache(model) -> DynamicCache:
    """The ``DynamicCache`` ``model`` would make for itself, with its full-attention and
    sliding-window layers replaced by :class:`AppendLayer` and :class:`SlidingAppendLayer`
    (layers of any other type are kept as they are)."""
    cache = DynamicCache(config=model.config)
    cache.layers = [_appending(layer) for layer in cache.layers]
    return cache


def _appending(layer):
    if type(layer) is DynamicSlidingWindowLayer:
        return SlidingAppendLayer(sliding_window=layer.sliding_window)
    if type(layer) is DynamicLayer:
        return AppendLayer()
    return layer
