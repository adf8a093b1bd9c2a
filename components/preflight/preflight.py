"""Preflight: check the run's parameters and list its shards, on a CPU, before any GPU is asked for.

Everything that can be checked this early fails here with one clear message: a shard
pattern that matches nothing, an unreachable S3 endpoint, wrong credentials (a storage
prefix we cannot write), an unknown model, layers out of range, fewer than one GPU for
the LLM (the GPU count is a string: see parse_gpu_count). A Hugging Face hub model is pinned
here to the commit its name points at now, once for the whole run: ``<storage prefix>/resolved-models.json``
(``common.model_families.hub_revision``), which extract reads.
"""

import re
import uuid

from ..common import storage
from ..common.contracts import check_unique_shard_names
from ..common.model_families import is_hf_model, model_n_layers
from ..common.model_families.hub_revision import resolve_hub_models, write_resolved_models
from ..common.models import parse_layers


def vision_layer_count(model: str, pretrained: str = "", pins: dict | None = None) -> int:
    """Blocks of the model's vision encoder (from its config: an unknown or unsupported model fails here).
    A Hugging Face model whose files are given elsewhere (``pretrained``) is read from there; a hub
    model at its commit in ``pins``."""
    return model_n_layers(model, (pretrained or None) if is_hf_model(model) else None, pins=pins)


def parse_gpu_count(value: str, parameter: str = "categorize_gpus") -> int:
    """A GPU count given as text (a STRING pipeline parameter, because that is what KFP's driver
    can put into a pod's GPU limit) -> int >= 1; a ValueError naming the parameter and the fix."""
    text = str(value).strip()
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise ValueError(f"{parameter}={value!r} is not a GPU count: give a whole number of GPUs, at least 1, "
                         f"written in digits (e.g. 8); it becomes the step's Kubernetes GPU limit")
    return int(text)


def check_run(shards: str, storage_prefix: str, model: str, layers: str, llm_model: str, llm_gpus: str,
              pretrained: str = "") -> list[str]:
    """Validate a run's parameters; returns the shard URIs. Raises ValueError/StorageError naming the fix."""
    pins = resolve_hub_models(model, pretrained or None) if is_hf_model(model) else {}
    n_layers = vision_layer_count(model, pretrained, pins)
    parse_layers(layers, n_layers)
    parse_gpu_count(llm_gpus, "categorize_gpus")
    if not llm_model.strip():
        raise ValueError("categorize_model is empty: give a Hugging Face id, a local/PVC folder, an s3:// prefix, or smollm2-135m")
    if not storage_prefix.strip():
        raise ValueError("storage_prefix is empty: give an s3://bucket/prefix (or a path on a shared volume) for bulk data")
    uris = storage.expand_pattern(shards)
    if not uris:
        raise ValueError(f"shards={shards!r} matches no shard: check the pattern (braces {{000..004}} and globs work)")
    check_unique_shard_names(uris)
    probe = storage.join(storage_prefix, f".lverb-preflight-{uuid.uuid4().hex[:8]}")
    storage.write_bytes(probe, b"ok")  # wrong credentials or a read-only bucket fail here, not after hours of GPU work
    storage.delete(probe)
    if pins:
        write_resolved_models(storage_prefix, pins)
    return uris
