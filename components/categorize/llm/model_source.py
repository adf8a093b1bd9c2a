"""Where a labelling LLM's files are: an ``s3://`` prefix (downloaded once), a local folder, or a
hub id (transformers reads ``HF_TOKEN`` from the environment); and its config."""

from __future__ import annotations

import os

from ...common import storage
from ...common.random_weights import check_not_renamed
from ...common.storage.download_cache import download_prefix
from .offline_llms import SMOLLM2, TINY_RANDOM, llama3_tokenizer, smollm2_config, tiny_llama_config

_FETCH_SUFFIXES = (".json", ".safetensors", ".model", ".txt", ".jinja", ".tiktoken")


def resolve_model_source(model: str) -> str:
    """A local directory or hub id that ``from_pretrained`` can read."""
    check_not_renamed(model)
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
