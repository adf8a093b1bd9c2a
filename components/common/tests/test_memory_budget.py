"""The one rule for KV-cache bytes and for batch sizes from memory (common.memory_budget), as the
caption decoders and the labelling LLM's plan use it."""

import pytest
import torch
from transformers import LlamaConfig

from latent_verbalizer.components.common.memory_budget import (
    config_kv_bytes_per_token,
    config_kv_width,
    kv_bytes_per_token,
    logits_bytes,
    rows_in_free_memory,
    rows_that_fit,
)


def test_kv_bytes_count_keys_and_values_of_every_layer():
    assert kv_bytes_per_token(n_layers=3, kv_width=64, dtype=torch.float32) == 2 * 3 * 64 * 4
    assert kv_bytes_per_token(n_layers=3, kv_width=64, dtype=torch.bfloat16) == 2 * 3 * 64 * 2


def test_grouped_query_attention_caches_only_the_key_value_heads():
    """Llama-3.1-70B: 8 key/value heads of 128 of 64 query heads; 320 KiB a token in bfloat16."""
    config = LlamaConfig(hidden_size=8192, num_attention_heads=64, num_key_value_heads=8, num_hidden_layers=80)
    assert config_kv_width(config) == 8 * 128
    assert config_kv_bytes_per_token(config, torch.bfloat16) == 320 * 1024


def test_logits_are_float32_copies():
    assert logits_bytes(1000) == 4 * 1000 * 3
    assert logits_bytes(1000, copies=2) == 4 * 1000 * 2


@pytest.mark.parametrize("budget, per_row, max_rows, min_rows, expected", [
    (1000, 100, 256, 1, 10),
    (1000, 100, 4, 1, 4),        # capped
    (50, 100, 256, 1, 1),        # at least one row
    (50, 100, 256, 0, 0),        # a plan may find that nothing fits
    (-5, 100, 256, 0, 0),
])
def test_rows_that_fit(budget, per_row, max_rows, min_rows, expected):
    assert rows_that_fit(budget, per_row, max_rows, min_rows) == expected


def test_cpu_batches_take_the_cpu_size():
    assert rows_in_free_memory("cpu", bytes_per_row=1 << 40, max_rows=256, cpu_rows=16) == 16
