"""The labelling generator's in-place KV cache against transformers' own DynamicCache."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache

from latent_verbalizer.components.categorize.llm.growing_cache import GrowingLayer, growing_cache
from latent_verbalizer.components.common.model_families.hf_cache_kwarg import cache_kwarg, cache_of


def _step(model, cache, ids):
    out = model(input_ids=ids, use_cache=True, **{cache_kwarg(model): cache})
    return cache_of(out), out.logits[:, -1]


@torch.inference_mode()
def test_it_holds_what_a_dynamic_cache_holds_through_steps_and_batch_changes(tiny):
    model = tiny.model
    torch.manual_seed(0)
    prefix = torch.randint(0, 1000, (1, 40))
    ours, theirs = growing_cache(model.config), DynamicCache(config=model.config)
    assert all(isinstance(layer, GrowingLayer) for layer in ours.layers)
    (ours, ours_logits), (theirs, theirs_logits) = _step(model, ours, prefix), _step(model, theirs, prefix)
    for cache in (ours, theirs):
        cache.batch_repeat_interleave(3)                       # as the generator expands the prefix
    buffers = []
    for step in range(5):
        ids = torch.randint(0, 1000, (ours.layers[0].keys.shape[0], 1))
        (ours, ours_logits), (theirs, theirs_logits) = _step(model, ours, ids), _step(model, theirs, ids)
        torch.testing.assert_close(ours_logits, theirs_logits, rtol=0, atol=0)
        buffers.append(ours.layers[0].keys.data_ptr())
        if step == 2:                                          # a row leaves the batch
            for cache in (ours, theirs):
                cache.batch_select_indices(torch.tensor([0, 2]))
    for a, b in zip(ours.layers, theirs.layers):
        torch.testing.assert_close(a.keys, b.keys, rtol=0, atol=0)
        torch.testing.assert_close(a.values, b.values, rtol=0, atol=0)
    # In place: the first step after a batch change re-makes the buffers, later steps write into them.
    assert buffers[0] == buffers[1] == buffers[2] and buffers[3] == buffers[4]
    assert buffers[3] != buffers[2]


@torch.inference_mode()
def test_a_full_buffer_is_remade_with_room_and_keeps_its_tokens(tiny):
    layer = GrowingLayer()
    keys = torch.arange(2 * 3 * 70 * 4, dtype=torch.float32).reshape(2, 3, 70, 4)
    layer.update(keys[..., :60, :], -keys[..., :60, :])
    room = layer._keys_buffer.shape[-2]
    assert room >= 60 + 64
    for t in range(60, 70):
        layer.update(keys[..., t:t + 1, :], -keys[..., t:t + 1, :])
    assert torch.equal(layer.keys, keys) and torch.equal(layer.values, -keys)
    assert layer._keys_buffer.shape[-2] == room                # 10 more tokens fit: no copy
