"""Thumbnails and reference captions from the input webdataset shards (local or S3)."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Collection
from dataclasses import dataclass, field

from ...common import storage
from ...common.contracts import SkippedSample
from ...common.tar_samples import Sample, ShardError, iter_samples

log = logging.getLogger("lverb.report")


@dataclass
class ShardImages:
    thumbnails: dict[str, str] = field(default_factory=dict)   # key -> base64 JPEG
    references: dict[str, list[str]] = field(default_factory=dict)  # key -> reference captions
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    shards: list[str] = field(default_factory=list)
    unreadable_shards: list[tuple[str, str]] = field(default_factory=list)  # (shard, reason): read up to the error


def reference_captions(sample: Sample) -> list[str]:
    """A sample's reference captions: its ``txt``, and its ``json``'s ``captions`` (or ``caption``)."""
    found: list[str] = []
    if "txt" in sample.files:
        text = sample.files["txt"].decode("utf-8", "replace").strip()
        found += [text] if text else []
    if "json" in sample.files:
        try:
            obj = json.loads(sample.files["json"])
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            captions = obj.get("captions")
            if captions is None and isinstance(obj.get("caption"), str):
                captions = [obj["caption"]]
            if isinstance(captions, list):
                found += [str(c) for c in captions if isinstance(c, str) and c.strip()]
    return found


def thumbnail(data: bytes, px: int, quality: int = 70) -> str:
    """A JPEG thumbnail (longest side ``px``) as base64."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (px * 2, px * 2))  # fast JPEG downscale while decoding
        rgb = im.convert("RGB")
        rgb.thumbnail((px, px))
        buf = io.BytesIO()
        rgb.save(buf, "JPEG", quality=quality, optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def read_shard_images(pattern: str, wanted_keys: set[str], thumbnail_px: int = 96,
                      max_thumbnails: int | None = None, skip_shards: Collection[str] = frozenset(),
                      thumbnail_keys: set[str] | None = None) -> ShardImages:
    """Stream the shards once: the reference captions of ``wanted_keys``, and thumbnails of
    ``thumbnail_keys`` (default: the wanted keys; e.g. only the images a page's browser embeds).

    A shard that cannot be read (not a tar, truncated, gone) is recorded in ``unreadable_shards``
    with what it gave until then: thumbnails are not worth a failed report. ``skip_shards``
    (failed in the pipeline, listed on the page already) are not read.
    """
    shards = storage.expand_pattern(pattern)
    if not shards:
        raise FileNotFoundError(f"--images {pattern}: no shards match; pass the webdataset shard pattern "
                                "the pipeline read (e.g. data/{000000..000004}.tar or s3://bucket/shards/*.tar)")
    out = ShardImages(shards=shards)
    thumbnail_keys = wanted_keys if thumbnail_keys is None else thumbnail_keys
    limit = max_thumbnails if max_thumbnails is not None else len(thumbnail_keys)
    # Samples the reader skips (no image, repeated key) were never captioned: extract's
    # manifest already records them, and the report lists them from the captions' metadata.
    ignored: list[SkippedSample] = []
    for uri in shards:
        if uri in skip_shards:
            continue
        try:
            read_one_shard(uri, wanted_keys, out, ignored, thumbnail_px, limit, thumbnail_keys)
        except (ShardError, storage.StorageError, OSError) as e:
            log.warning("images: %s could not be read for thumbnails: %s", uri, e)
            out.unreadable_shards.append((uri, str(e)))
    log.info("images: %d thumbnails, %d images with reference captions, from %d shards",
             len(out.thumbnails), len(out.references), len(shards))
    return out


def read_one_shard(uri: str, wanted_keys: set[str], out: ShardImages, ignored: list[SkippedSample], thumbnail_px: int,
                   limit: int, thumbnail_keys: set[str] | None = None) -> None:
    """Thumbnails and reference captions of one shard's wanted samples, into ``out``."""
    for sample in iter_samples(uri, ignored):
        if sample.key not in wanted_keys:
            continue
        references = reference_captions(sample)
        if references:
            out.references.setdefault(sample.key, []).extend(references)
        if sample.key in out.thumbnails or len(out.thumbnails) >= limit or (
                thumbnail_keys is not None and sample.key not in thumbnail_keys):
            continue
        try:
            out.thumbnails[sample.key] = thumbnail(sample.image_bytes()[1], thumbnail_px)
        except Exception as e:  # noqa: BLE001 -- PIL raises many types; a broken image must not sink the report
            out.unreadable.append((sample.key, f"{type(e).__name__}: {e}"))
