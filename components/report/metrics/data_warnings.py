"""What the page and the summary warn about in a run's tables: shares that do not add up, rows
repeated, keys in two shards, images that could not be read."""

from __future__ import annotations

import math

from ..inputs.shard_images import ShardImages
from . import category_shares as cat
from .layer_stats import CaptionGrid


def share_warnings(shares: cat.ShareMatrix | None) -> list[str]:
    """Layers whose shares do not sum to 100%, and layers without valid labels."""
    if shares is None:
        return []
    warnings = []
    sums = shares.layer_sums()
    off = [(layer, s) for layer, s in zip(shares.layers, sums) if not math.isnan(s) and abs(s - 100) > 0.5]
    if off:
        warnings.append("category shares do not sum to 100% at layers " + ", ".join(
            f"{layer} ({s:.1f}%)" for layer, s in off[:8]) + ": the aggregate table is incomplete")
    empty = [layer for layer, s in zip(shares.layers, sums) if math.isnan(s)]
    if empty and shares.categories:
        warnings.append(f"no valid labels at layer{'s' if len(empty) > 1 else ''} "
                        + ", ".join(map(str, empty)) + " (shown as gaps)")
    return warnings


def grid_warnings(grid: CaptionGrid) -> list[str]:
    """Rows the captions repeat, and image keys found in more than one shard."""
    warnings = []
    if grid.duplicates:
        warnings.append(f"{grid.duplicates} (image, layer) rows appear more than once in the captions; "
                        "the first was kept")
    if grid.collisions:
        listed = "; ".join(f"{key} in {', '.join(shards)}" for key, shards in list(grid.collisions.items())[:10])
        more = f" and {len(grid.collisions) - 10} more" if len(grid.collisions) > 10 else ""
        warnings.append(f"{len(grid.collisions)} image key{'s appear' if len(grid.collisions) != 1 else ' appears'} in more "
                        f"than one shard: {listed}{more}. Each copy is kept as its own image, named 'key (shard)', "
                        "without thumbnail or reference captions (the shards cannot tell which is which); give every "
                        "image a key of its own (lverb shards keys images by their path)")
    return warnings


def image_warnings(grid: CaptionGrid, images: ShardImages | None, images_pattern: str | None,
                   max_thumbnails: int | None, thumbnail_keys: list[str] | None = None) -> list[str]:
    """Images and shards that could not be read for thumbnails, and images the shards lack among
    ``thumbnail_keys`` (the images whose thumbnails were wanted; default: every captioned image)."""
    warnings = []
    if images and images.unreadable:
        n_bad = len(images.unreadable)
        warnings.append(f"{n_bad} image{'s' if n_bad != 1 else ''} could not be read for thumbnails: "
                        + ", ".join(key for key, _ in images.unreadable[:10]))
    for shard, reason in (images.unreadable_shards if images else []):
        warnings.append(f"shard {shard} could not be read for thumbnails and reference captions: {reason}")
    wanted = grid.image_keys if thumbnail_keys is None else thumbnail_keys
    if images and len(images.thumbnails) < len(wanted) and max_thumbnails is None:
        collided = {f"{key} ({shard})" for key, shards in grid.collisions.items() for shard in shards}
        missing = len(wanted) - len(images.thumbnails) - len(images.unreadable) - len(collided.intersection(wanted))
        if missing:
            warnings.append(f"{missing} images of the captions were not found in the shards {images_pattern}")
    return warnings
