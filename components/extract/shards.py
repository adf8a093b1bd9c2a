"""Webdataset shards: making them from image folders, and reading their samples back.

A shard is a tar of samples; the files of one sample share a key (``KEY.jpg``,
``KEY.json``). Reading is a stream (``tarfile`` in ``r|`` mode over
``storage.open_read``), so a shard on S3 is never copied to disk first.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
import warnings
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from PIL import Image

from ..common import storage
from ..common.contracts import IMAGE_EXTENSIONS, SkippedSample

log = logging.getLogger(__name__)

# Decoding a bigger image than this (after JPEG draft-mode reduction) is refused: an
# RGB image of 64 Mpx takes ~200 MB; a pod must not be OOM-killed by one odd sample.
DEFAULT_MAX_PIXELS = 64_000_000


class ShardError(RuntimeError):
    """The shard itself is unreadable (not a tar, truncated archive): it fails alone."""


@dataclass
class Sample:
    key: str
    files: dict[str, bytes] = field(default_factory=dict)  # extension -> bytes

    def image_bytes(self) -> tuple[str, bytes] | None:
        for ext in IMAGE_EXTENSIONS:
            if ext in self.files:
                return ext, self.files[ext]
        return None


def _split_name(name: str) -> tuple[str, str]:
    """webdataset's rule: key is the path up to the first dot of the file name."""
    dirname, base = os.path.split(name)
    if "." not in base:
        return name, ""
    stem, ext = base.split(".", 1)
    return os.path.join(dirname, stem) if dirname else stem, ext.lower()


def iter_samples(shard_uri: str, skipped: list[SkippedSample]) -> Iterator[Sample]:
    """Samples of a shard in order, grouped by key.

    Samples without an image and repeated keys are not yielded but appended to
    ``skipped`` with the reason. An unreadable archive raises ShardError naming the shard.
    """
    seen: set[str] = set()
    current: Sample | None = None

    def finish(sample: Sample | None):
        if sample is None:
            return None
        if sample.key in seen:
            skipped.append(SkippedSample(sample.key, "duplicate key: an earlier sample of this shard has it"))
            return None
        seen.add(sample.key)
        if sample.image_bytes() is None:
            have = ", ".join(sorted(sample.files)) or "nothing"
            skipped.append(SkippedSample(sample.key, f"no image (jpg/jpeg/png/webp) in the sample; it has {have}"))
            return None
        return sample

    try:
        with storage.open_read(shard_uri) as stream:
            try:
                archive = tarfile.open(fileobj=stream, mode="r|*")
            except tarfile.ReadError as e:
                if "empty" in str(e):
                    log.warning("%s is empty", shard_uri)
                    return
                raise ShardError(f"{shard_uri} is not a tar archive ({e}); webdataset shards are .tar files") from e
            for member in archive:
                if not member.isfile():
                    continue
                key, ext = _split_name(member.name)
                data = archive.extractfile(member).read()
                if current is not None and key != current.key:
                    done = finish(current)
                    current = None
                    if done is not None:
                        yield done
                if current is None:
                    current = Sample(key)
                if ext in current.files:
                    skipped.append(SkippedSample(key, f"duplicate key: {key}.{ext} appears twice in the shard"))
                    continue
                current.files[ext] = data
            done = finish(current)
            if done is not None:
                yield done
    except (tarfile.TarError, EOFError) as e:
        raise ShardError(f"{shard_uri} is a broken tar archive ({type(e).__name__}: {e}); re-create the shard") from e


def decode_image(data: bytes, target_size: int = 224, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Bytes -> RGB PIL image, within a memory bound.

    Images decode at full resolution, exactly as the study did, unless they exceed
    ``max_pixels``: then a JPEG is decoded at a reduced scale (``draft``, still at least
    twice the model's input size) and anything else is refused. 16-bit images are scaled
    to 8 bit (not clipped); CMYK, greyscale, palette and alpha images become RGB the way
    the model's own transform would. Raises ValueError with the reason for anything it
    cannot decode.
    """
    try:
        with warnings.catch_warnings():  # we bound the size ourselves, below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ValueError(f"image too large to decode safely ({e}); downscale it first") from e
    except Exception as e:  # noqa: BLE001 -- PIL raises many types for bad files
        raise ValueError(f"not a readable image ({type(e).__name__}: {e})") from e
    w, h = img.size
    if w * h > max_pixels and img.format == "JPEG":
        img.draft("RGB", (target_size * 2, target_size * 2))
        w, h = img.size
    if w * h > max_pixels:
        raise ValueError(f"image too large to decode safely ({w}x{h} > {max_pixels} pixels); downscale it first")
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


def sample_key(filename: str) -> str:
    """A webdataset key from a file name: its stem, with dots and odd characters made ``_``."""
    return _KEY_SAFE.sub("_", os.path.splitext(os.path.basename(filename))[0])


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
    reference captions when the Karpathy file gives them. Returns the shard URIs.
    """
    import webdataset as wds

    if per_shard < 1:
        raise ValueError("--per-shard must be at least 1")
    if karpathy:
        entries = karpathy_entries(karpathy, src, split)
        missing = [p for p, _ in entries if not os.path.exists(p)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} images of the split are not under {src} (first: {missing[0]})")
    else:
        if not os.path.isdir(src):
            raise FileNotFoundError(f"{src} is not a folder of images")
        entries = [(p, {"filename": os.path.basename(p)}) for p in _image_files(src)]
        if not entries:
            raise ValueError(f"{src} holds no .jpg/.jpeg/.png/.webp images")
    if not storage.is_s3(out):
        os.makedirs(storage.local_path(out), exist_ok=True)
    uris = []
    for start in range(0, len(entries), per_shard):
        uri = storage.join(out, f"{prefix}-{start // per_shard:06d}.tar")
        with storage.open_write(uri) as f:
            writer = wds.TarWriter(f)
            for path, meta in entries[start:start + per_shard]:
                ext = path.rsplit(".", 1)[-1].lower()
                with open(path, "rb") as img:
                    writer.write({"__key__": sample_key(path), ext: img.read(), "json": meta})
            writer.close()
        uris.append(uri)
        log.info("wrote %s", uri)
    return uris
