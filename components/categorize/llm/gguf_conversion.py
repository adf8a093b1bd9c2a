"""The offline SmolLM2, converted once from its GGUF file to a Hugging Face folder in the
download cache (safetensors), so that later runs load it in about a second."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time

import torch

from ...common.storage.download_cache import cache_root
from .offline_llms import SMOLLM2

log = logging.getLogger(__name__)


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


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(smollm2_folder())
