"""``lverb interpret``: the quick look -- images in, every layer's caption out. No pipeline, no S3."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

import torch

from ..common.devices import resolve_device
from ..common.model_families import STUDY_MODEL, load_model
from ..common.model_families.layer_selection import parse_layers
from ..common.precision import exact_float32_math
from .decoder_factory import make_decoder
from .greedy import GreedySettings


@dataclass
class LayerCaption:
    image: str
    layer: int
    caption: str
    token_ids: list[int]
    entropy_bits: float


def interpret_images(paths: list[str], model: str = STUDY_MODEL, pretrained: str | None = None,
                     precision: str = "float32", device: str = "auto", layers: str = "all",
                     settings: GreedySettings | None = None) -> list[LayerCaption]:
    """Every selected layer's caption of every image, decoded in one batch per image."""
    from PIL import Image

    device = resolve_device(device)
    loaded = load_model(model, pretrained, device="cpu")
    chosen = parse_layers(layers, loaded.n_layers)
    decoder = make_decoder(loaded, precision=precision, settings=settings).to(device)
    if decoder.precision == "float32":
        exact_float32_math()
    loaded.vision_tower().to(device)
    results = []
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"image {path} does not exist")
        try:
            image = Image.open(path).convert("RGB")
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{path} is not a readable image ({e})") from e
        pixels = loaded.preprocess(image)[None].to(device)
        blocks = loaded.vision_block_outputs(pixels, chosen)
        embs = torch.cat([decoder.image_embeddings(b) for b in blocks])
        out = decoder.generate(embs)
        for i, layer in enumerate(chosen):
            results.append(LayerCaption(path, layer, loaded.caption_text(out.token_ids[i]),
                                        out.token_ids[i], out.entropy_bits[i]))
    return results


def print_table(rows: list[LayerCaption], stream=None) -> None:
    stream = stream or sys.stdout  # looked up when called: whoever captures stdout (a test, a wrapper) gets it
    for image in dict.fromkeys(r.image for r in rows):
        print(f"\n{image}", file=stream)
        print(f"{'layer':>5}  {'entropy':>7}  caption", file=stream)
        for r in rows:
            if r.image == image:
                print(f"{r.layer:>5}  {r.entropy_bits:7.3f}  {r.caption}", file=stream)


def print_json(rows: list[LayerCaption], stream=None) -> None:
    stream = stream or sys.stdout
    for r in rows:
        print(json.dumps({"image": r.image, "layer": r.layer, "caption": r.caption,
                          "token_ids": r.token_ids, "entropy_bits": r.entropy_bits}, ensure_ascii=False), file=stream)
