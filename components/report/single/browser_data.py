"""The image browser's data: every caption once, its parts located and coloured by category,
and per (image, layer) the caption's index, entropy and F1 to the final caption."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from ...common.contracts import part_category
from ..inputs.layer_naming import LayerNaming
from ..inputs.shard_images import ShardImages
from ..inputs.tables import CategorizeOutput
from ..metrics.layer_stats import CaptionGrid, LayerStats


@dataclass
class LabelView:
    """The labels table as the page shows it: per distinct caption its parts with their
    category, and how many answers carry each status flag."""

    parts: dict[str, list[dict]]   # caption -> [{"text", "labels", "category"}]
    status_flags: Counter          # flag -> distinct captions whose status has it ("ok" included)

    @classmethod
    def empty(cls) -> "LabelView":
        return cls({}, Counter())


def label_view(categorized: CategorizeOutput | None) -> LabelView:
    """Parts per caption (first row of a caption wins) and status flags counted one by one:
    a status is ``;``-joined flags, and every flag the categorize step sets is counted,
    whatever its name."""
    if categorized is None:
        return LabelView.empty()
    view = LabelView.empty()
    table = categorized.labels
    for caption, parts, status in zip(table.column("caption").to_pylist(), table.column("parts").to_pylist(),
                                      table.column("status").to_pylist()):
        if caption in view.parts:
            continue
        view.status_flags.update(flag for flag in (status or "").split(";") if flag)
        view.parts[caption] = [
            {"text": part.get("text") or "", "labels": [x for x in (part.get("labels") or []) if x],
             "category": part_category(part.get("labels") or [], categorized.category_map)}
            for part in parts or []
        ]
    return view


def to_utf16_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-16-le")) // 2


def caption_spans(caption: str, parts: list[dict], category_index: dict[str, int],
                  label_index: dict[str, int]) -> list[int]:
    """Where each part sits in the caption, in order: flat [start, end, category, labels] * n,
    offsets in UTF-16 code units (JavaScript string indices). Parts not found are left out."""
    spans: list[int] = []
    lower = caption.lower()
    haystack = lower if len(lower) == len(caption) else caption
    position = 0
    for part in parts:
        needle = part["text"].strip()
        if not needle:
            continue
        needle = needle.lower() if haystack is lower else needle
        start = haystack.find(needle, position)
        if start < 0:
            continue
        end = start + len(needle)
        label_text = ", ".join(part["labels"])
        label_index.setdefault(label_text, len(label_index))
        spans.extend([start, end, category_index[part["category"]], label_index[label_text]])
        position = end
    if spans and any(ord(ch) > 0xFFFF for ch in caption):
        for k in range(0, len(spans), 4):
            spans[k], spans[k + 1] = to_utf16_offset(caption, spans[k]), to_utf16_offset(caption, spans[k + 1])
    return spans


def browser_data(grid: CaptionGrid, stats: LayerStats, labels: LabelView, categories: list[str],
                 colours: dict[str, str], images: ShardImages | None, naming: LayerNaming | None = None) -> dict:
    category_index = {c: i for i, c in enumerate(categories)}
    label_index: dict[str, int] = {}
    caption_number: dict[str, int] = {}
    captions: list[str] = []
    spans: list[list[int]] = []
    n_images, n_layers = grid.rows.shape
    caption_of = np.full(n_images * n_layers, -1, dtype=np.int64)
    entropy_centi = np.full(n_images * n_layers, -1, dtype=np.int64)
    f1_centi = np.full(n_images * n_layers, -1, dtype=np.int64)
    for i in range(n_images):
        for j in range(n_layers):
            row = grid.rows[i, j]
            if row < 0:
                continue
            caption = grid.captions[row]
            number = caption_number.get(caption)
            if number is None:
                number = caption_number[caption] = len(captions)
                captions.append(caption)
                spans.append(caption_spans(caption, labels.parts.get(caption, []), category_index, label_index))
            cell = i * n_layers + j
            caption_of[cell] = number
            entropy_centi[cell] = _centi(grid.entropy[row])
            f1_centi[cell] = _centi(stats.row_f1[row])
    shard_names = list(dict.fromkeys(grid.shards))
    shard_index = {s: i for i, s in enumerate(shard_names)}
    return {
        "layers": grid.layers,
        "layerLabels": [naming.describe(layer) for layer in grid.layers] if naming else None,
        "categories": categories,
        "colours": [colours[c] for c in categories],
        "labelSets": list(label_index),
        "captions": captions,
        "spans": spans,
        "images": {
            "keys": grid.image_keys,
            "shards": shard_names,
            "shard": [shard_index[s] for s in grid.shards],
            "cap": caption_of.tolist(),
            "ent": entropy_centi.tolist(),
            "f1": f1_centi.tolist(),
            "settle": stats.stays_close,
            "thumbs": [images.thumbnails.get(k, "") for k in grid.image_keys] if images else None,
            "refs": [images.references.get(k, []) for k in grid.image_keys] if images and images.references else None,
        },
    }


def _centi(value: float) -> int:
    """A number as an integer in hundredths (-1: none), to keep the embedded JSON small."""
    return int(round(value * 100)) if math.isfinite(value) else -1
