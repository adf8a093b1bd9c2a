"""How many rows of a batch fit in memory: the one place for the KV-cache size of a decoder
and for the batch size that free device memory allows.

Every step sizes its batches from these: extract (activations and kept features per image),
caption (a decode row's caches, ``bytes_per_row`` of each family's decoder) and categorize
(the labelling LLM's prompt and answer, ``llm.layout``).
"""

from __future__ import annotations

FREE_MEMORY_SHARE = 0.5      # of the device's free memory, a batch may take this share (the rest: allocator slack, other work)
LOGIT_COPIES = 3             # a decode step holds the logits, their log-probs and probs (float32) at once
FLOAT32_BYTES = 4


def itemsize(dtype) -> int:
    """Bytes of one element of a torch dtype."""
    import torch

    return torch.finfo(dtype).bits // 8 if dtype.is_floating_point else torch.iinfo(dtype).bits // 8


def kv_bytes_per_token(n_layers: int, kv_width: int, dtype) -> int:
    """Bytes one token adds to a KV cache: keys and values of every attention layer, each
    ``kv_width`` wide (key/value heads x head size), in ``dtype``."""
    return 2 * n_layers * kv_width * itemsize(dtype)


def config_kv_width(config) -> int:
    """Key/value width of a Hugging Face text config: key/value heads (fewer than the query
    heads under grouped-query attention) x head size."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return kv_heads * (getattr(config, "head_dim", None) or config.hidden_size // heads)


def config_kv_bytes_per_token(config, dtype) -> int:
    """``kv_bytes_per_token`` of a Hugging Face text config."""
    return kv_bytes_per_token(config.num_hidden_layers, config_kv_width(config), dtype)


def logits_bytes(vocab_size: int, copies: int = LOGIT_COPIES) -> int:
    """Bytes of one row's step logits in float32, ``copies`` of them alive at once."""
    return FLOAT32_BYTES * vocab_size * copies


def rows_that_fit(budget_bytes: float, bytes_per_row: int, max_rows: int, min_rows: int = 1) -> int:
    """Rows of ``bytes_per_row`` that ``budget_bytes`` holds, between ``min_rows`` and ``max_rows``."""
    return int(max(min_rows, min(max_rows, budget_bytes // max(bytes_per_row, 1))))


def rows_in_free_memory(device: str, bytes_per_row: int, max_rows: int, cpu_rows: int) -> int:
    """Rows per batch on ``device``: on a GPU, what ``FREE_MEMORY_SHARE`` of its free memory
    holds (at least 1, at most ``max_rows``); on the CPU, ``cpu_rows``."""
    if not str(device).startswith("cuda"):
        return cpu_rows
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return rows_that_fit(free * FREE_MEMORY_SHARE, bytes_per_row, max_rows)
