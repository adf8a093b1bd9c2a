"""Making webdataset shards from image folders (``lverb shards``).

Reading a shard's samples back (the tar reader and the key rule) lives in
``components.common.tar_samples``, shared with the report; decoding their images for the
model in ``image_decoding``.
"""

from __future__ import annotations

import json
import logging
import os
import re

from ..common import storage
from ..common.contracts import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

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
