"""``lverb interpret``: the quick look -- images in, every layer's caption out (with ``grounding``,
also where in the image each caption looks). No pipeline, no S3."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from ..common.devices import resolve_device
from ..common.model_families import STUDY_MODEL, load_model
from ..common.model_families.layer_selection import parse_layers
from ..common.precision import exact_float32_math
from .decoder_factory import make_decoder
from .greedy import GreedySettings
from .grounding import Grounder


@dataclass
class LayerCaption:
    image: str
    layer: int
    caption: str
    token_ids: list[int]
    entropy_bits: float
    grounding: list[float] | None = None        # the caption's map, row-major over ``grid`` (with grounding)
    grid: tuple[int, int] | None = None
    view: np.ndarray | None = field(default=None, repr=False)  # the image as the model saw it, RGB in [0, 1]


def interpret_images(paths: list[str], model: str = STUDY_MODEL, pretrained: str | None = None,
                     precision: str = "float32", device: str = "auto", layers: str = "all",
                     settings: GreedySettings | None = None, grounding: bool = False) -> list[LayerCaption]:
    """Every selected layer's caption of every image, decoded in one batch per image; with
    ``grounding``, each caption's grounding map too (``caption.grounding``), one backward per image."""
    from PIL import Image

    device = resolve_device(device)
    loaded = load_model(model, pretrained, device="cpu")
    chosen = parse_layers(layers, loaded.n_layers)
    decoder = make_decoder(loaded, precision=precision, settings=settings).to(device)
    if decoder.precision == "float32":
        exact_float32_math()
    loaded.vision_tower().to(device)
    grounder = Grounder(decoder, batch_size=len(chosen)) if grounding else None
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
        if grounder is None:
            out = decoder.generate(torch.cat([decoder.image_embeddings(b) for b in blocks]))
            maps, view = [None] * len(chosen), None
        else:
            from .grounding_png import model_view

            x = torch.cat([grounder.normalised_tokens(b) for b in blocks])
            out = decoder.generate(grounder.decoder_inputs(x))
            maps, view = grounder.maps(x, out.token_ids).tolist(), model_view(loaded, pixels[0])
        for i, layer in enumerate(chosen):
            results.append(LayerCaption(path, layer, loaded.caption_text(out.token_ids[i]), out.token_ids[i],
                                        out.entropy_bits[i], maps[i], grounder.grid if grounder else None, view))
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
        line = {"image": r.image, "layer": r.layer, "caption": r.caption, "token_ids": r.token_ids,
                "entropy_bits": r.entropy_bits}
        if r.grounding is not None:
            line["grounding"] = {"grid": list(r.grid), "weights": r.grounding}
        print(json.dumps(line, ensure_ascii=False), file=stream)


def write_grounding_pngs(rows: list[LayerCaption], folder: str) -> list[str]:
    """One PNG per (image, layer): the caption's map over the image as the model saw it, named
    ``<image name>.layer<k>.png`` (a number added where two images share a name)."""
    from .grounding_png import write_grounding_png

    names: dict[str, str] = {}
    paths = []
    for r in rows:
        if r.image not in names:
            stem = os.path.splitext(os.path.basename(r.image))[0]
            taken = set(names.values())
            names[r.image] = stem if stem not in taken else next(f"{stem}-{n}" for n in range(2, len(names) + 2)
                                                                 if f"{stem}-{n}" not in taken)
        path = os.path.join(folder, f"{names[r.image]}.layer{r.layer}.png")
        paths.append(write_grounding_png(path, r.view, r.grounding, r.grid, f"layer {r.layer}: {r.caption}"))
    return paths
