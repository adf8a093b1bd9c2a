"""What a report writes and returns besides its page: the result object, CSV and page files,
and the warnings about its inputs that the page and the summary show."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field

from ...common import storage
from ...common.contracts import FailedShard
from ..inputs.shard_images import ShardImages
from ..metrics import category_shares as cat
from ..metrics.layer_stats import CaptionGrid


@dataclass
class ReportResult:
    metrics: dict[str, float]     # headline numbers, all finite floats (KFP Metrics)
    markdown: str                 # short summary (KFP Markdown)
    html: str                     # the page itself (KFP HTML)
    files: dict[str, str] = field(default_factory=dict)  # name -> URI written


def failed_shard_warnings(failed: list[FailedShard]) -> list[str]:
    """A line per shard the run left out, with the step that found it bad and why (the page's top)."""
    return [f"shard {f.shard} failed at {f.step} and is left out of this report: {f.reason}" for f in failed]


def failed_shards_markdown(failed: list[FailedShard]) -> list[str]:
    """The summary's lines on the shards the run left out (empty when none)."""
    if not failed:
        return []
    n = len(failed)
    lines = [f"**{n} shard{'s' if n != 1 else ''} failed** and {'are' if n != 1 else 'is'} left out of this report:", ""]
    lines += [f"- {_markdown_text(f.shard)} ({f.step}): {_markdown_text(f.reason)}" for f in failed]
    return lines + [""]


def _markdown_text(text: str) -> str:
    """Plain text in Markdown: characters that would start markup or HTML are escaped."""
    return re.sub(r"([\\`*_{}\[\]<>|~])", r"\\\1", " ".join(text.split()))


def share_warnings(shares: cat.ShareMatrix | None) -> list[str]:
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


def input_warnings(grid: CaptionGrid, images: ShardImages | None, images_pattern: str | None,
                   max_thumbnails: int | None) -> list[str]:
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
    if images and images.unreadable:
        n_bad = len(images.unreadable)
        warnings.append(f"{n_bad} image{'s' if n_bad != 1 else ''} could not be read for thumbnails: "
                        + ", ".join(key for key, _ in images.unreadable[:10]))
    for shard, reason in (images.unreadable_shards if images else []):
        warnings.append(f"shard {shard} could not be read for thumbnails and reference captions: {reason}")
    if images and len(images.thumbnails) < len(grid.image_keys) and max_thumbnails is None:
        collided = sum(len(shards) for shards in grid.collisions.values())
        missing = len(grid.image_keys) - len(images.thumbnails) - len(images.unreadable) - collided
        if missing:
            warnings.append(f"{missing} images of the captions were not found in the shards {images_pattern}")
    return warnings


def write_csv(uri: str, header: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    storage.write_bytes(uri, buf.getvalue().encode())
    return uri


def write_page_files(out_uri: str, markdown: str, metrics: dict[str, float], html: str) -> dict[str, str]:
    contents = {"summary.md": markdown.encode(), "metrics.json": json.dumps(metrics, indent=1).encode(),
                "report.html": html.encode()}
    files = {}
    for name, data in contents.items():
        files[name] = storage.join(out_uri, name)
        storage.write_bytes(files[name], data)
    return files
