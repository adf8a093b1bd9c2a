"""Webdataset shards: making them from image folders, and decoding their images.

Reading a shard's samples back (the tar reader and the key rule) lives in
``components.common.tar_samples``, shared with the report.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import warnings

import numpy as np
from PIL import Image

from ..common import storage
from ..common.contracts import IMAGE_EXTENSIONS

# re-exported: extract.py reads shards through these names

log = logging.getLogger(__name__)

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


# ---------------------------------------------------------------- writing shards

_KEY_SAFE = re.compile(r"[^A-Za-z0-9_\-]")


def sample_key(path: str, root: str | None = None) -> str:
    """A webdataset key for an image file: its path under ``root`` (its base name without
    ``root``), extension dropped, with dots and odd characters made ``_`` in every part and
    the parts joined by ``/``. Webdataset ends a key at the first dot of the file name, so
    no part may keep one; ``a/1.jpg`` and ``b/1.jpg`` stay ``a/1`` and ``b/1``."""
    rel = os.path.relpath(path, root) if root else os.path.basename(path)
    parts = os.path.splitext(rel)[0].split(os.sep)
    return "/".join(_KEY_SAFE.sub("_", part) for part in parts)


def unique_keys(keys: list[str], names: list[str]) -> tuple[list[str], list[str]]:
    """Keys made unique: a key already taken gets ``-2``, ``-3``... (the first file in
    order keeps it). Returns the keys and one line per renamed file saying which."""
    taken = set(keys)
    first: dict[str, str] = {}
    out, renamed = [], []
    for key, name in zip(keys, names):
        if key not in first:
            first[key] = name
            out.append(key)
            continue
        n = 2
        while f"{key}-{n}" in taken:
            n += 1
        new = f"{key}-{n}"
        taken.add(new)
        out.append(new)
        renamed.append(f"{name} -> key {new!r} ({key!r} is {first[key]})")
    return out, renamed


def _image_files(folder: str) -> list[str]:
    out = []
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if f.lower().rsplit(".", 1)[-1] in IMAGE_EXTENSIONS:
                out.append(os.path.join(dirpath, f))
    return sorted(out)


def karpathy_entries(split_file: str, image_root: str, split: str) -> list[tuple[str, dict]]:
    """(image path, json metadata) for one split of Karpathy's ``dataset_coco.json``."""
    with storage.open_read(split_file) as f:
        data = json.load(f)
    if "images" not in data:
        raise ValueError(f"{split_file} is not a Karpathy split file (no 'images' list)")
    splits = {"train": ("train", "restval")}.get(split, (split,))
    out = []
    for entry in data["images"]:
        if entry.get("split") not in splits:
            continue
        rel = os.path.join(entry.get("filepath", ""), entry["filename"])
        path = os.path.join(image_root, rel)
        if not os.path.exists(path):
            path = os.path.join(image_root, entry["filename"])
        meta = {
            "captions": [s["raw"] for s in entry.get("sentences", [])],
            "cocoid": entry.get("cocoid"),
            "filename": entry["filename"],
        }
        out.append((path, meta))
    if not out:
        raise ValueError(f"{split_file} has no images in split {split!r}")
    return out


def write_shards(src: str, out: str, per_shard: int = 1000, karpathy: str | None = None,
                 split: str = "test", prefix: str = "shard") -> list[str]:
    """Pack a folder of images (or a Karpathy split of MSCOCO) into webdataset shards.

    Image bytes are stored as they are (no re-encoding); a sample's ``json`` holds its
    file name (its path under ``src``) and its reference captions when the Karpathy file
    gives them. Keys are unique in the dataset (see ``sample_key``); a file whose key is
    taken (``img.1.jpg`` next to ``img_1.jpg``, ``1.jpg`` next to ``1.png``) gets the key
    with ``-2`` added, logged as a warning naming both files. Returns the shard URIs.
    """
    import webdataset as wds

    if per_shard < 1:
        raise ValueError("--per-shard must be at least 1")
    if karpathy:
        entries = karpathy_entries(karpathy, src, split)
        missing = [p for p, _ in entries if not os.path.exists(p)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} images of the split are not under {src} (first: {missing[0]})")
        keys = [sample_key(meta["filename"]) for _, meta in entries]
    else:
        if not os.path.isdir(src):
            raise FileNotFoundError(f"{src} is not a folder of images")
        entries = [(p, {"filename": os.path.relpath(p, src)}) for p in _image_files(src)]
        if not entries:
            raise ValueError(f"{src} holds no .jpg/.jpeg/.png/.webp images")
        keys = [sample_key(p, src) for p, _ in entries]
    keys, renamed = unique_keys(keys, [meta["filename"] for _, meta in entries])
    for line in renamed:
        log.warning("key collision: %s", line)
    if not storage.is_s3(out):
        os.makedirs(storage.local_path(out), exist_ok=True)
    uris = []
    for start in range(0, len(entries), per_shard):
        uri = storage.join(out, f"{prefix}-{start // per_shard:06d}.tar")
        with storage.open_write(uri) as f:
            writer = wds.TarWriter(f)
            for (path, meta), key in zip(entries[start:start + per_shard], keys[start:start + per_shard]):
                ext = path.rsplit(".", 1)[-1].lower()
                with open(path, "rb") as img:
                    writer.write({"__key__": key, ext: img.read(), "json": meta})
            writer.close()
        uris.append(uri)
        log.info("wrote %s", uri)
    return uris
