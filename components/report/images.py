"""Thumbnails and reference captions from the input webdataset shards (local or S3)."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import tarfile
from dataclasses import dataclass, field

from ..common import storage
from ..common.contracts import IMAGE_EXTENSIONS

log = logging.getLogger("lverb.report")

# webdataset's own rule: the key is the path up to the first dot of the file name
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")


@dataclass
class ShardImages:
    thumbnails: dict[str, str] = field(default_factory=dict)   # key -> base64 JPEG
    references: dict[str, list[str]] = field(default_factory=dict)  # key -> reference captions
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    shards: list[str] = field(default_factory=list)


def _references(ext: str, data: bytes) -> list[str]:
    if ext == "txt":
        text = data.decode("utf-8", "replace").strip()
        return [text] if text else []
    try:
        obj = json.loads(data)
    except ValueError:
        return []
    if isinstance(obj, dict):
        caps = obj.get("captions")
        if caps is None and isinstance(obj.get("caption"), str):
            caps = [obj["caption"]]
        if isinstance(caps, list):
            return [str(c) for c in caps if isinstance(c, str) and c.strip()]
    return []


def thumbnail(data: bytes, px: int, quality: int = 70) -> str:
    """A JPEG thumbnail (longest side ``px``) as base64."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (px * 2, px * 2))  # fast JPEG downscale while decoding
        im = im.convert("RGB")
        im.thumbnail((px, px))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality, optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def read_shard_images(pattern: str, wanted_keys: set[str], thumbnail_px: int = 96,
                      max_thumbnails: int | None = None) -> ShardImages:
    """Stream the shards once: thumbnails for ``wanted_keys`` and every reference caption."""
    shards = storage.expand_pattern(pattern)
    if not shards:
        raise FileNotFoundError(f"--images {pattern}: no shards match; pass the webdataset shard pattern "
                                "the pipeline read (e.g. data/{000000..000004}.tar or s3://bucket/shards/*.tar)")
    out = ShardImages(shards=shards)
    limit = max_thumbnails if max_thumbnails is not None else len(wanted_keys)
    for uri in shards:
        with storage.open_read(uri) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                m = _KEY_EXT.match(member.name)
                if not m:
                    continue
                key, ext = m.group(1), m.group(2).lower()
                if key not in wanted_keys:
                    continue
                if ext in ("json", "txt"):
                    refs = _references(ext, tar.extractfile(member).read())
                    if refs:
                        out.references.setdefault(key, []).extend(refs)
                elif ext in IMAGE_EXTENSIONS and key not in out.thumbnails and len(out.thumbnails) < limit:
                    data = tar.extractfile(member).read()
                    try:
                        out.thumbnails[key] = thumbnail(data, thumbnail_px)
                    except Exception as e:  # a broken image must not sink the report
                        out.unreadable.append((key, f"{type(e).__name__}: {e}"))
    log.info("images: %d thumbnails, %d images with reference captions, from %d shards",
             len(out.thumbnails), len(out.references), len(shards))
    return out
