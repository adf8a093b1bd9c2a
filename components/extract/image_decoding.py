"""Decoding a shard's images for the model, within a memory bound (what extract does to each
sample that ``common.tar_samples`` reads)."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

# Decoding a bigger image than this (after JPEG draft-mode reduction) is refused: an
# RGB image of 64 Mpx takes ~200 MB; a pod must not be OOM-killed by one odd sample.
DEFAULT_MAX_PIXELS = 64_000_000
# The area alone does not bound memory: the model's transform resizes the SHORT side to its input
# size, so a legal 1 x 64,000,000 PNG becomes 224 x 14 billion pixels (an OverflowError or a
# MemoryError that kills the step). Each side and the ratio of the sides are capped too. 32:1 keeps
# every real photograph and stitched panorama (rarely beyond 10:1; a 360-degree one is 2:1), and the
# resized image at most 32 x 448 x 448 RGB pixels (19 MB); the centre crop shows 1/32 of such an
# image anyway. 32,768 px per side: the area cap and the ratio allow up to ~45,000.
DEFAULT_MAX_SIDE = 32_768
DEFAULT_MAX_ASPECT_RATIO = 32.0


def decode_image(data: bytes, target_size: int = 224, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_side: int = DEFAULT_MAX_SIDE, max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO) -> Image.Image:
    """Bytes -> RGB PIL image, within a memory bound.

    Images decode at full resolution, exactly as the study did, unless they exceed
    ``max_pixels``: then a JPEG is decoded at a reduced scale (``draft``, still at least
    twice the model's input size) and anything else is refused. A side over ``max_side`` or
    sides in a ratio over ``max_aspect_ratio`` are refused whatever the area (the size is read
    from the header, before any pixel is decoded). 16-bit images are scaled
    to 8 bit (not clipped); CMYK, greyscale, palette and alpha images become RGB the way
    the model's own transform would. Raises ValueError with the reason for anything it
    cannot decode.
    """
    try:
        with warnings.catch_warnings():  # we bound the size ourselves, below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ValueError(f"image too large to decode safely ({e}); downscale it first") from e
    except Exception as e:  # noqa: BLE001 -- PIL raises many types for bad files
        raise ValueError(f"not a readable image ({type(e).__name__}: {e})") from e
    w, h = img.size
    if min(w, h) < 1 or max(w, h) / min(w, h) > max_aspect_ratio:
        raise ValueError(f"image shape {w}x{h} refused: its sides are in a ratio over {max_aspect_ratio:g}:1, and the "
                         "model's transform would scale its short side to the input size and the long side "
                         "with it; crop it or pad it closer to square first")
    if w * h > max_pixels and img.format == "JPEG":
        img.draft("RGB", (target_size * 2, target_size * 2))
        w, h = img.size
    if w * h > max_pixels:
        raise ValueError(f"image too large to decode safely ({w}x{h} > {max_pixels} pixels); downscale it first")
    if max(w, h) > max_side:
        raise ValueError(f"image shape {w}x{h} refused: a side over {max_side} pixels; downscale it first")
    try:
        img.load()
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"corrupt or truncated image ({type(e).__name__}: {e})") from e
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        scale = 257.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 1.0
        img = Image.fromarray(np.clip(arr / scale, 0, 255).astype(np.uint8), mode="L")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img
