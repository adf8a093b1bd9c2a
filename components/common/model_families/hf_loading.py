"""Hugging Face models: where their files come from, and which family a checkpoint is.

A model is named as
- ``hf:ORG/NAME`` or ``hf:ORG/NAME@REV`` (the hub; a token, when needed, comes from ``HF_TOKEN``
  in the environment, never from an argument); read at one commit (``hub_revision``);
- a local folder holding ``config.json`` (a PVC or a copy made elsewhere);
- an ``s3://``/``minio://`` prefix holding such a folder (downloaded once into the cache
  folder of ``common.storage.download_cache``);
- ``tiny-random-blip``, ``tiny-random-vit-gpt2``, ``tiny-random-llava``: small models of the
  real classes whose configs and tokenizers ship with the package, random weights from a
  fixed seed (tests and offline demos).

``pretrained`` may name another place holding the same ``hf:`` model (a local folder or
``s3://`` prefix, for air-gapped clusters). Weights are read from safetensors files where the
model has them; a model with only ``pytorch_model.bin`` (e.g. nlpconnect/vit-gpt2-image-captioning)
is read through torch's weights-only unpickler (tensors and plain containers; no code runs), the
same rule as CoCa's ``.pt``/``.bin`` checkpoints. ``trust_remote_code`` stays off.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import torch

from .. import storage
from ..random_weights import CONFIG_DIR, RANDOM, init_random_weights
from ..storage.download_cache import download_prefix
from .base import BLIP, LLAVA, VISION_ENCODER_DECODER
from .hub_revision import HF_PREFIX, hub_repo

TINY_RANDOM_HF = ("tiny-random-blip", "tiny-random-vit-gpt2", "tiny-random-llava")
ARCHITECTURES = {  # config "architectures" entry -> family
    "BlipForConditionalGeneration": BLIP,
    "VisionEncoderDecoderModel": VISION_ENCODER_DECODER,
    "LlavaForConditionalGeneration": LLAVA,
}
MODEL_TYPES = {"blip": BLIP, "vision-encoder-decoder": VISION_ENCODER_DECODER, "llava": LLAVA}
MODEL_FILES = (".json", ".safetensors", ".bin", ".txt", ".model", ".jinja", ".tiktoken")


@dataclass(frozen=True)
class HFSource:
    """Where to read a Hugging Face model from: a local folder or a hub repo id."""

    location: str          # local folder, or ``ORG/NAME`` on the hub
    on_hub: bool
    random_weights: bool   # tiny-random-coca: config only, weights made from a seed
    revision: str | None = None   # on the hub: the commit (or branch, tag) its files are read at


def is_hf_model(model: str) -> bool:
    """True for names this module loads (anything but open_clip CoCa). Any local folder is one
    (a CoCa model is an architecture name), so a folder without ``config.json`` is told so."""
    return (model.startswith(HF_PREFIX) or model in TINY_RANDOM_HF or storage.is_s3(model)
            or os.path.isdir(storage.local_path(model)))


def resolve_source(model: str, pretrained: str | None = None, config_only: bool = False) -> HFSource:
    """The folder or hub id a model name points at (S3 prefixes are downloaded first; with
    ``config_only``, only their ``*config.json`` files)."""
    random_weights = pretrained == RANDOM or model in TINY_RANDOM_HF and not pretrained
    where = pretrained if pretrained and pretrained != RANDOM else model
    if where != model and not (storage.is_s3(where) or where.startswith(HF_PREFIX) or os.path.exists(where)):
        raise ValueError(f"pretrained {where!r} for {model}: give the model's folder (a local path), an s3:// prefix "
                         "or hf:ORG/NAME holding it, 'random', or leave it empty for the model itself "
                         "(open_clip pretrained tags are for CoCa models only)")
    if model in TINY_RANDOM_HF and where == model:
        return HFSource(os.path.join(CONFIG_DIR, model), on_hub=False, random_weights=True)
    if storage.is_s3(where):
        folder = download_prefix(where, suffixes=("config.json",) if config_only else _files_to_fetch(where))
        return HFSource(_checked_folder(folder, where), on_hub=False, random_weights=random_weights)
    if where.startswith(HF_PREFIX):
        repo, revision = hub_repo(where)
        return HFSource(repo, on_hub=True, random_weights=random_weights, revision=revision)
    return HFSource(_checked_folder(storage.local_path(where), where), on_hub=False, random_weights=random_weights)


def _files_to_fetch(prefix: str) -> tuple[str, ...]:
    """The model's files under an S3 prefix: pickled ``.bin`` weights only where there are no safetensors
    (hub folders often hold both; the same weights twice would be fetched for nothing)."""
    if any(uri.endswith(".safetensors") for uri in storage.list_uris(prefix.rstrip("/") + "/")):
        return tuple(s for s in MODEL_FILES if s != ".bin")
    return MODEL_FILES


def _checked_folder(folder: str, given: str) -> str:
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"model {given!r}: no config.json in {folder}; give a Hugging Face model folder "
                                "(config.json, *.safetensors, tokenizer and processor files), an s3:// prefix of one, "
                                "or hf:ORG/NAME")
    return folder


def read_config(source: HFSource):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source.location, trust_remote_code=False, revision=source.revision)
    except OSError as e:
        if source.on_hub:
            raise RuntimeError(
                f"could not read hf:{source.location} from the Hugging Face hub ({e}). Without internet, download "
                "the model folder elsewhere (huggingface-cli download ...) and give its local path or s3:// prefix "
                "as --pretrained (or as the model itself). A gated model needs HF_TOKEN in the environment."
            ) from e
        raise


def family_of(config) -> str:
    """The family of a checkpoint, from its config; an error naming the supported classes otherwise."""
    for arch in config.architectures or []:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    if config.model_type in MODEL_TYPES and not config.architectures:
        return MODEL_TYPES[config.model_type]
    raise ValueError(
        f"model class {config.architectures or config.model_type} is not supported: latent captions need a text "
        f"decoder that reads the vision encoder ({', '.join(ARCHITECTURES)}, or an open_clip CoCa)"
    )


def load_hf_model(model_class, source: HFSource, config) -> torch.nn.Module:
    """The model of ``model_class``, in float32 on the CPU, in eval mode."""
    if source.random_weights:
        net = model_class(config)
        init_random_weights(net)
        return net.eval()
    token = (os.environ.get("HF_TOKEN") or None) if source.on_hub else None
    try:
        net = model_class.from_pretrained(source.location, dtype=torch.float32, trust_remote_code=False, token=token,
                                          revision=source.revision, weights_only=True)  # .bin weights: torch's weights-only unpickler, no code runs
    except OSError as e:
        raise RuntimeError(f"could not load the weights of {source.location} ({e}); the model folder needs its "
                           "weights (*.safetensors, or a pytorch_model.bin state dict)") from e
    except pickle.UnpicklingError as e:
        raise ValueError(f"refused the weights of {source.location}: its .bin file holds more than tensors (only "
                         "torch's weights-only unpickler is used, no code is run); convert it to safetensors") from e
    return net.eval()


def load_pretrained_part(loader, source: HFSource, what: str):
    """A tokenizer / image processor / processor of the model (``loader.from_pretrained``)."""
    try:
        return loader.from_pretrained(source.location, trust_remote_code=False, revision=source.revision)
    except (OSError, ValueError) as e:
        raise RuntimeError(f"{source.location} has no usable {what} ({e}); the model folder needs its "
                           f"{what} files") from e
