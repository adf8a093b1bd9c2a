"""Loading CoCa models: real weights (hub tag, local file/folder, S3 object) or small
random ones that run offline.

``tiny-random-coca`` is a small CoCa of the real architecture (config shipped in
``model_configs/``), random weights from a fixed seed. open_clip leaves CoCa's decoder
output projection (``text_decoder.text_projection``) uninitialised; random models get
it initialised, so their captions vary with the image like a real model's do.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .. import storage
from ..random_weights import CONFIG_DIR, RANDOM, check_not_renamed, init_random_weights
from ..storage.download_cache import download_object

log = logging.getLogger(__name__)

TINY_RANDOM = "tiny-random-coca"
SOT_TOKEN_ID = 49406
EOS_TOKEN_ID = 49407
PAD_TOKEN_ID = 0
COCA_EMBEDDINGS = ("class_embedding", "positional_embedding", "cls_emb", "query")  # drawn though 1-D


@dataclass
class LoadedCoca:
    model: torch.nn.Module           # open_clip CoCa, eval mode
    preprocess: Callable               # the model's own eval transform (PIL -> tensor)
    tokenizer: object                # open_clip tokenizer (for decoding captions)
    name: str                        # architecture name as given
    pretrained: str                  # weights as given ("random" for random init)

    @property
    def n_layers(self) -> int:
        return len(self.model.visual.transformer.resblocks)


@functools.lru_cache(maxsize=1)
def _register_configs() -> None:
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)


def known_models() -> list[str]:
    import open_clip

    _register_configs()
    return sorted(m for m in open_clip.list_models() if m.startswith("coca")) + [TINY_RANDOM]


def architecture_name(model: str) -> str:
    """open_clip's config name for a model name we accept."""
    return "coca-tiny-random" if model == TINY_RANDOM else model


def check_coca_name(model: str) -> None:
    import open_clip

    check_not_renamed(model)
    _register_configs()
    if architecture_name(model) not in open_clip.list_models() or not architecture_name(model).startswith("coca"):
        raise ValueError(
            f"unknown model {model!r}: use one of the open_clip CoCa architectures "
            f"({', '.join(known_models())}), a Hugging Face captioner as hf:ORG/NAME, a local model folder or "
            "s3:// prefix, or tiny-random-blip / tiny-random-vit-gpt2 / tiny-random-llava"
        )


def coca_n_layers(model: str) -> int:
    """Blocks of a CoCa architecture's vision tower, from its config (no weights loaded)."""
    import open_clip

    check_coca_name(model)
    return open_clip.get_model_config(architecture_name(model))["vision_cfg"]["layers"]


def default_pretrained(model: str, pretrained: str | None) -> str:
    if pretrained:
        return pretrained
    return RANDOM if model == TINY_RANDOM else "mscoco_finetuned_laion2B-s13B-b90k"


def resolve_weights(pretrained: str) -> str:
    """A local path for weights given as a path or an ``s3://`` object (downloaded once into
    the cache folder of ``download_cache``)."""
    if not storage.is_s3(pretrained):
        return storage.local_path(pretrained)
    return download_object(pretrained)


def init_random_coca_weights(model: torch.nn.Module) -> None:
    """``random_weights.init_random_weights`` (CoCa's 1-D embeddings drawn too), then the decoder
    projection open_clip leaves empty, scaled by its input width."""
    g = init_random_weights(model, embeddings=COCA_EMBEDDINGS)
    with torch.no_grad():
        proj = model.text_decoder.text_projection
        proj.copy_(torch.randn(proj.shape, generator=g) * proj.shape[0] ** -0.5)


def load_coca(model: str, pretrained: str | None = None, device: str = "cpu", tower_only: bool = False) -> LoadedCoca:
    """Load a CoCa model with its eval transform and tokenizer.

    ``pretrained``: an open_clip tag (downloaded from the Hugging Face hub), a local
    ``.safetensors``/``.pt``/``.bin`` file or folder, an ``s3://`` object, or ``random``.
    ``tower_only`` (extract): from a safetensors checkpoint, only ``visual`` gets weights (float32,
    the same as the whole load's); the rest stays on the ``meta`` device and must not be run.
    Random weights and other checkpoints are loaded whole.
    """
    import open_clip

    check_coca_name(model)
    pretrained = default_pretrained(model, pretrained)
    arch = architecture_name(model)
    if pretrained == RANDOM:
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # open_clip warns "no pretrained weights": random is what was asked for
        try:
            net, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None, device="cpu")
        finally:
            root.setLevel(level)
        init_random_coca_weights(net)
    else:
        weights = pretrained
        is_path = storage.is_s3(pretrained) or os.path.sep in pretrained or os.path.exists(pretrained)
        if is_path:
            weights = resolve_weights(pretrained)
            if not os.path.exists(weights):
                raise FileNotFoundError(f"weights {pretrained!r} not found: give an existing file, folder or s3:// object")
        elif pretrained.lower().replace("-", "_") not in open_clip.list_pretrained_tags_by_model(arch):  # open_clip's tag spelling
            raise ValueError(
                f"{pretrained!r} is not a pretrained tag of {model} (known: "
                f"{', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'}); "
                "or give a local checkpoint path / s3:// URI, or 'random'"
            )
        try:
            net, preprocess = _coca_tower_only(arch, weights) if tower_only else (None, None)
            if net is None:
                net, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=weights, device="cpu")
        except Exception as e:  # noqa: BLE001 -- hub errors come in many types
            if is_path:
                raise
            raise RuntimeError(
                f"could not download {model} weights {pretrained!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
                "Without internet, download the checkpoint elsewhere (open_clip_model.safetensors of "
                f"the hub repo for {model}/{pretrained}) and pass its local path or s3:// URI as --pretrained."
            ) from e
    net = (net if any(p.is_meta for p in net.parameters()) else net.to(device)).eval()
    tokenizer = open_clip.get_tokenizer(arch)
    return LoadedCoca(model=net, preprocess=preprocess, tokenizer=tokenizer, name=model, pretrained=pretrained)


def _coca_tower_only(arch: str, weights: str):
    """(model, transform) with only the vision tower's weights read from a ``.safetensors`` checkpoint
    (the transform as the whole load makes it, the tag's own where ``weights`` is a tag); (None, None)
    where the checkpoint is another format or does not hold the tower under open_clip's names."""
    import open_clip
    from accelerate import init_empty_weights

    from .vision_only import load_tower_from_safetensors

    with init_empty_weights(include_buffers=False):  # the tower has no buffers; the text side's stay unmade
        net, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=weights, load_weights=False,
                                                                   device="meta")
    tag = open_clip.get_pretrained_cfg(arch, weights)
    checkpoint = open_clip.download_pretrained(tag) if tag else weights  # a tag's file is in open_clip's cache by now
    if not checkpoint.endswith(".safetensors") or not load_tower_from_safetensors(net.visual, checkpoint, "visual."):
        log.info("%s: no safetensors checkpoint holding the vision tower as open_clip names it; loading the whole "
                 "model", weights)
        return None, None
    return net, preprocess


@torch.no_grad()
def vision_block_outputs(visual: torch.nn.Module, images: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
    """Outputs ``[n, tokens, width]`` of the selected residual blocks of a CoCa vision tower.

    The same tensors as forward hooks on ``visual.transformer.resblocks[i]`` during a
    full forward, but the forward stops after the last selected block.
    """
    x = visual._embeds(images)
    wanted = set(layers)
    outs = []
    for i, block in enumerate(visual.transformer.resblocks[: max(layers) + 1]):
        x = block(x)
        if i in wanted:
            outs.append(x)
    return outs


def caption_text(tokenizer, token_ids: list[int]) -> str:
    """A CoCa caption's text: tokens up to (not including) the one that ended it, decoded the
    way the study did (open_clip's tokenizer, surrounding spaces stripped)."""
    ids = [t for t in token_ids if t not in (EOS_TOKEN_ID, PAD_TOKEN_ID, SOT_TOKEN_ID)]
    return tokenizer.decode(ids).strip() if ids else ""
