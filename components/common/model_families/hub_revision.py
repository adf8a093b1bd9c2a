"""Hugging Face hub models pinned to one commit.

A hub model is named ``hf:ORG/NAME`` or ``hf:ORG/NAME@REV`` (a branch, tag or commit). Its
files are read at one commit: the name is *pinned* to ``hf:ORG/NAME@<40-hex sha>`` once, and
that pinned name is what every step loads and records (features' and captions' model and
parameters), so a prefix reused after the hub's branch moved is not taken as done.

In a pipeline run, preflight pins the model once and writes ``<storage prefix>/resolved-models.json``
(given name -> pinned name); extract reads it, so every shard loads the same commit, and records
the pinned name in its features, which caption loads. Elsewhere (the CLIs) the name is pinned
when the model is loaded. The commit comes from the hub (``HfApi.model_info``; a token only from
``HF_TOKEN`` in the environment) or, with ``HF_HUB_OFFLINE=1``, from the local Hugging Face cache.
"""

from __future__ import annotations

import os
import re

from .. import storage

HF_PREFIX = "hf:"
COMMIT = re.compile(r"[0-9a-f]{40}")
RESOLVED_MODELS_NAME = "resolved-models.json"


def split_revision(name: str) -> tuple[str, str | None]:
    """``hf:ORG/NAME@REV`` -> (``hf:ORG/NAME``, ``REV``); other names -> (name, None)."""
    if name.startswith(HF_PREFIX) and "@" in name:
        base, revision = name.rsplit("@", 1)
        if not revision:
            raise ValueError(f"model {name!r}: write a hub revision as hf:ORG/NAME@REV (a branch, tag or commit sha)")
        return base, revision
    return name, None


def hub_repo(name: str) -> tuple[str, str | None]:
    """``hf:ORG/NAME[@REV]`` -> (``ORG/NAME``, ``REV`` or None); a ValueError for a name of another shape."""
    base, revision = split_revision(name)
    repo = base[len(HF_PREFIX):].strip("/")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"model {name!r}: write hub models as hf:ORG/NAME (optionally @REVISION), e.g. "
                         "hf:Salesforce/blip-image-captioning-large")
    return repo, revision


def is_pinned(name: str) -> bool:
    """True for ``hf:ORG/NAME@<commit sha>``."""
    revision = split_revision(name)[1]
    return revision is not None and bool(COMMIT.fullmatch(revision))


def same_hub_model(a: str | None, b: str | None) -> bool:
    """True when ``a`` and ``b`` name the same hub repo and one of them names no revision (or both the same)."""
    if not (a and b and a.startswith(HF_PREFIX) and b.startswith(HF_PREFIX)):
        return False
    (base_a, rev_a), (base_b, rev_b) = split_revision(a), split_revision(b)
    return base_a == base_b and (rev_a is None or rev_b is None or rev_a == rev_b)


def _offline() -> bool:
    import huggingface_hub

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return huggingface_hub.is_offline_mode() or value.strip().upper() in ("1", "ON", "YES", "TRUE")


def resolve_commit(name: str) -> str:
    """The commit sha that ``hf:ORG/NAME[@REV]`` points at now (REV default: the repo's default branch)."""
    repo, revision = hub_repo(name)
    if _offline():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo, "config.json", revision=revision)
        if isinstance(cached, str):
            return os.path.basename(os.path.dirname(cached))   # .../snapshots/<commit>/config.json
        raise RuntimeError(f"model {name}: HF_HUB_OFFLINE is set and the local Hugging Face cache holds no "
                           f"config.json of it at {revision or 'its default branch'}; download the model folder "
                           "and give its local path or s3:// prefix as pretrained (extract_pretrained)")
    from huggingface_hub import HfApi

    try:
        return HfApi().model_info(repo, revision=revision, token=os.environ.get("HF_TOKEN") or None).sha
    except Exception as e:  # noqa: BLE001 -- network, auth, missing repo or revision: one message with the fixes
        raise RuntimeError(
            f"could not resolve {name} to a commit on the Hugging Face hub ({type(e).__name__}: {e}). Without "
            "internet, download the model folder elsewhere (huggingface-cli download ...) and give its local path or "
            "s3:// prefix as pretrained (extract_pretrained in the pipeline, --pretrained on the command line), "
            "naming the model hf:ORG/NAME@<commit> to record which commit it is; a gated or private model needs "
            "HF_TOKEN in the environment; a revision after @ must exist in the repo") from e


def pin(name: str, pins: dict | None = None) -> str:
    """``name`` pinned to a commit: as ``pins`` (a preflight's ``resolved-models.json``) has it, else
    resolved now. Names that are not hub names, and pinned ones, come back as they are."""
    if not name.startswith(HF_PREFIX):
        return name
    hub_repo(name)   # a malformed name is told so before the hub is asked
    if is_pinned(name):
        return name
    if pins and pins.get(name):
        return pins[name]
    return f"{HF_PREFIX}{hub_repo(name)[0]}@{resolve_commit(name)}"


def hub_source_name(model: str, pretrained: str | None) -> str | None:
    """The hub name a model's files are read from (``pretrained`` where it names a place, else the
    model itself), or None when they come from a folder, an S3 prefix or are random."""
    where = pretrained if pretrained and pretrained != "random" else model
    return where if where.startswith(HF_PREFIX) else None


def pin_names(model: str, pretrained: str | None, pins: dict | None = None) -> tuple[str, str | None]:
    """(model, pretrained) with the one the files are read from on the hub pinned to a commit."""
    source = hub_source_name(model, pretrained)
    if source is None:
        return model, pretrained
    pinned = pin(source, pins)
    return (pinned, pretrained) if source == model else (model, pinned)


def resolved_models_uri(storage_prefix: str) -> str:
    return storage.join(storage_prefix, RESOLVED_MODELS_NAME)


def resolve_hub_models(model: str, pretrained: str | None) -> dict:
    """The run's hub name pinned (preflight, once): given name -> pinned name; {} when the model's files
    are not read from the hub."""
    source = hub_source_name(model, pretrained)
    return {source: pin(source)} if source else {}


def write_resolved_models(storage_prefix: str, pins: dict) -> None:
    """``<prefix>/resolved-models.json``: what extract loads (and records) for the run's hub names."""
    storage.write_json(resolved_models_uri(storage_prefix), pins)


def read_resolved_models(storage_prefix: str) -> dict:
    """The run's pinned hub names (a preflight's ``resolved-models.json``), or {} where there is none."""
    uri = resolved_models_uri(storage_prefix)
    return storage.read_json(uri) if storage.exists(uri) else {}
