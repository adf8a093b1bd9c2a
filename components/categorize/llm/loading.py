"""Loading the labelling LLM: a hub id, a local directory, an ``s3://`` prefix (``model_source``),
or one of the offline models (``offline_llms``: ``tiny-random-llama``, ``smollm2-135m``). Weights are read
only as safetensors (the offline SmolLM2's GGUF file converted once, ``gguf_conversion``): no pickle,
never ``trust_remote_code``; the Hugging Face token comes only from the environment (``HF_TOKEN``)."""

from __future__ import annotations

import torch

from ...common.precision import torch_dtype
from .gguf_conversion import smollm2_folder
from .model_source import resolve_model_source
from .offline_llms import SMOLLM2, SMOLLM2_NAME, TINY_RANDOM, llama3_tokenizer, random_llama, tiny_llama_config

DEFAULT_MODEL = "meta-llama/Llama-3.1-70B-Instruct"


def resolve_dtype(name: str, n_gpus: int) -> torch.dtype:
    """``auto``: bfloat16 on GPUs, float32 on CPU; otherwise the dtype of the name (``common.precision``)."""
    if name == "auto":
        return torch.bfloat16 if n_gpus else torch.float32
    return torch_dtype(name)


def load_llm(model: str, dtype: torch.dtype, device_map=None, max_memory=None, device: str = "cpu"):
    """(model, tokenizer, name) ready for generation; ``device_map``/``max_memory`` from the layout plan."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model == TINY_RANDOM:
        tokenizer = llama3_tokenizer()
        net = random_llama(tiny_llama_config(len(tokenizer)), dtype=dtype, device=device)
        return net, tokenizer, TINY_RANDOM
    if model == SMOLLM2:
        src = smollm2_folder()
        tokenizer = AutoTokenizer.from_pretrained(src)
        net = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, use_safetensors=True).to(device).eval()
        return net, tokenizer, SMOLLM2_NAME
    src = resolve_model_source(model)
    tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=False)
    kw = dict(dtype=dtype, trust_remote_code=False, use_safetensors=True)
    if device_map is not None:
        kw.update(device_map=device_map, max_memory=max_memory)
    net = AutoModelForCausalLM.from_pretrained(src, **kw)
    if device_map is None:
        net = net.to(device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return net.eval(), tokenizer, model
