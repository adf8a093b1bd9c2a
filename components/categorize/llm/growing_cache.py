"""A KV cache that grows in place, for the labelling generator.

transformers' ``DynamicCache`` concatenates each layer's keys and values with every new token:
a copy of the whole cache per decoding step. With the labelling prompt's 657-token prefix
repeated for every row, that copy was about a sixth of a SmolLM2 step at batch 16 on one CPU
core (222 ms against 183 ms, the same tokens). Here each layer writes into a buffer with room
to spare and gives attention a view of its filled part, so a step copies only its new token;
the buffer is re-made, with ``HEADROOM`` to spare, when it is full or when the batch changed
(rows dropped or repeated).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

HEADROOM = 8          # a re-made buffer has 1/HEADROOM more room than it needs (at least MIN_ROOM tokens)
MIN_ROOM = 64


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values are views of buffers with room to grow."""

    _keys_buffer: torch.Tensor | None = None
    _values_buffer: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        if not self._has_room(end, key_states):
            self._remake_buffers(start, end, key_states, value_states)
        assert self._keys_buffer is not None and self._values_buffer is not None
        self._keys_buffer[..., start:end, :] = key_states
        self._values_buffer[..., start:end, :] = value_states
        self.keys = self._keys_buffer[..., :end, :]
        self.values = self._values_buffer[..., :end, :]
        return self.keys, self.values

    def _has_room(self, end: int, key_states: torch.Tensor) -> bool:
        """The buffers still hold this layer's keys (no batch change made new tensors) and ``end`` tokens."""
        buffer = self._keys_buffer
        return (buffer is not None and buffer.shape[0] == key_states.shape[0] and buffer.shape[-2] >= end
                and self.keys.numel() > 0 and self.keys.data_ptr() == buffer.data_ptr())

    def _remake_buffers(self, start: int, end: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        room = end + max(MIN_ROOM, end // HEADROOM)
        keys = key_states.new_empty((*key_states.shape[:-2], room, key_states.shape[-1]))
        values = value_states.new_empty((*value_states.shape[:-2], room, value_states.shape[-1]))
        if start:
            keys[..., :start, :] = self.keys
            values[..., :start, :] = self.values
        self._keys_buffer, self._values_buffer = keys, values


def growing_cache(config) -> DynamicCache:
    """An empty ``DynamicCache`` for a model of ``config`` whose full-attention layers grow in place
    (other layer kinds, e.g. sliding-window ones, stay as transformers makes them)."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
