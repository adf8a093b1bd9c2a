"""A labelling LLM's size, from its config alone (meta device, no weights): for the layout plan."""

from __future__ import annotations

import torch

from ...common.memory_budget import itemsize


def model_bytes(config, dtype=torch.bfloat16) -> int:
    """Parameter bytes of a model of this config, counted on the meta device (no weights)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        net = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    return sum(p.numel() for p in net.parameters()) * itemsize(dtype)
