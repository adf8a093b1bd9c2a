"""Preflight: check the run's parameters and list its shards, on a CPU, before any GPU is asked for.

Everything that can be checked this early fails here with one clear message: a shard
pattern that matches nothing, an unreachable S3 endpoint, wrong credentials (a storage
prefix we cannot write), an unknown model, layers out of range, fewer than one GPU for
the LLM (the GPU count is a string: see parse_gpu_count). A Hugging Face hub model is pinned
here to the commit its name points at now, once for the whole run: ``<storage prefix>/resolved-models.json``
(``common.model_families.hub_revision``), which extract reads.
"""

import os
import re
import uuid

from ..common import storage
from ..common.contracts import check_unique_shard_names, parse_partition_count
from ..common.model_families import is_hf_model, model_n_layers
from ..common.model_families.hub_revision import resolve_hub_models, write_resolved_models
from ..common.model_families.layer_selection import parse_layers


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


MOUNTS_ENV = "LVERB_POD_MOUNTS"  # set by the pipeline on every pod: the volumes every step mounts
MEMORY = re.compile(r"[0-9]+(\.[0-9]+)?(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?")


def parse_memory(value: str, parameter: str) -> str:
    """A Kubernetes memory quantity (e.g. 64Gi), checked before any pod asks for it."""
    text = str(value).strip()
    if not MEMORY.fullmatch(text):
        raise ValueError(f"{parameter}={value!r} is not a memory size: write a Kubernetes quantity such as 64Gi or 500Mi")
    return text


def is_pod_path(value: str) -> bool:
    """A path on a pod's file system (not s3://, minio://, hf:, a hub id or a model name)."""
    return value.startswith(("/", "file://", "./", "../"))


def check_paths_are_mounted(read: dict[str, str], written: dict[str, str] | None = None) -> None:
    """On a cluster (the pipeline sets ``LVERB_POD_MOUNTS``), a path parameter must lie on a volume
    that every step mounts: each step runs in its own pod, which sees only what it mounts, so a
    path on one node's disk, or a folder on the volume that is not there, fails here, naming the
    parameter and the fix, instead of in a later step. ``read``/``written``: parameter name -> value
    of what the run reads (must exist) and writes (its folder is made)."""
    mounts = [m for m in os.environ.get(MOUNTS_ENV, "").split(",") if m]
    if not mounts:
        return  # a local run (kfp.local, the CLI): every step shares this machine's disk
    volume = " or ".join(mounts)
    for parameter, value in {**read, **(written or {})}.items():
        value = str(value or "").strip()
        if not value or not is_pod_path(value):
            continue
        path = os.path.normpath(storage.local_path(value))
        if not any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts):
            raise ValueError(
                f"{parameter}={value!r} is a path on a pod's own disk, which the pipeline's other steps cannot see: "
                f"every step mounts only {volume} (the lverb-model-weights volume). Copy it onto that volume and "
                f"give the {mounts[0]}/... path, or give an s3:// URI.")
        if parameter not in read:
            continue
        pattern = re.split(r"[{*?\[]", path)[0]  # a shard pattern: its fixed leading folder must exist
        folder = pattern if os.path.isdir(pattern) or pattern == path else os.path.dirname(pattern)
        if not os.path.exists(folder):
            raise ValueError(f"{parameter}={value!r}: {folder} does not exist on the volume mounted at {volume}; "
                             "check the path (copy the files there first)")


def check_run(shards: str, storage_prefix: str, model: str, layers: str, llm_model: str, llm_gpus: str,
              pretrained: str = "", compare_prefix: str = "", memory: dict[str, str] | None = None,
              partitions: int = 1) -> list[str]:
    """Validate a run's parameters; returns the shard URIs. Raises ValueError/StorageError naming the fix.
    ``memory``: the steps' memory parameters (name -> quantity)."""
    for parameter, value in (memory or {}).items():
        parse_memory(value, parameter)
    parse_partition_count(partitions)
    check_paths_are_mounted({"shards": shards, "extract_model": model, "extract_pretrained": pretrained,
                             "categorize_model": llm_model, "report_compare_prefix": compare_prefix},
                            written={"storage_prefix": storage_prefix})
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
