"""A grounding map drawn over the image as the model saw it (``lverb interpret --grounding``)."""

from __future__ import annotations

import os
import textwrap
import warnings

import numpy as np
import torch


def model_view(loaded, pixels: torch.Tensor) -> np.ndarray:
    """The preprocessed image ``[3, H, W]`` back in RGB ``[H, W, 3]`` within [0, 1]: what the patch
    grid covers (after the model's own resize and crop), its normalisation undone."""
    mean, std = _normalisation(loaded)
    rgb = pixels.detach().float().cpu() * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return rgb.clamp(0, 1).permute(1, 2, 0).numpy()


def _normalisation(loaded) -> tuple[tuple[float, ...], tuple[float, ...]]:
    processor = getattr(loaded, "image_processor", None)
    if processor is not None:
        if not getattr(processor, "do_normalize", True):
            return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        return tuple(processor.image_mean), tuple(processor.image_std)
    for step in getattr(getattr(loaded, "transform", None), "transforms", []):  # open_clip's torchvision Compose
        if type(step).__name__ == "Normalize":
            return tuple(step.mean), tuple(step.std)
    return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def write_grounding_png(path: str, view: np.ndarray, weights, grid: tuple[int, int], title: str) -> str:
    """One PNG: ``view`` with the map (``weights`` row-major over ``grid``) over it, ``title`` above."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no display backend

    rows, cols = grid
    heat = np.asarray(weights, dtype=np.float32).reshape(rows, cols)
    height, width = view.shape[:2]
    figure = Figure(figsize=(4, 4.6))
    axes = figure.subplots()
    axes.imshow(view, extent=(0, width, height, 0))
    shown = axes.imshow(heat, extent=(0, width, height, 0), cmap="inferno", alpha=0.55, interpolation="nearest",
                        vmin=0.0)
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04, label="share of the caption's attribution")
    axes.set_axis_off()
    axes.set_title("\n".join(textwrap.wrap(title, 48)[:3]), fontsize=8)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with warnings.catch_warnings():  # a caption's rare characters (random weights) without a glyph in the font
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.savefig(path, dpi=100, bbox_inches="tight")
    return path
