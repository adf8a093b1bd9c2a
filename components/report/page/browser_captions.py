"""The captions an image browser embeds: every distinct caption once, with where its labelled parts
sit, and per (image, layer) cell the caption's number. Both browsers (a run's, and the comparison's
for each run) take their captions from here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..metrics.labels import LabelView
from ..metrics.layer_stats import CaptionGrid


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


@dataclass
class BrowserCaptions:
    captions: list[str]          # each distinct caption once, in order of first use
    spans: list[list[int]]       # per caption: its parts (``caption_spans``)
    cap: np.ndarray              # per (image, layer) cell, image-major: the caption's number (-1: none)
    rows: np.ndarray             # per cell: the captions table's row (-1: none), for per-row numbers

    def per_cell(self, per_row: np.ndarray) -> list[int]:
        """A per-row number (e.g. ``grid.entropy``) per cell, in hundredths (-1: no caption or no value),
        to keep the embedded JSON small."""
        values = np.asarray(per_row, dtype=np.float64)[np.maximum(self.rows, 0)]
        known = (self.rows >= 0) & np.isfinite(values)
        return np.where(known, np.round(np.where(known, values, 0) * 100), -1).astype(np.int64).tolist()


def intern_captions(grid: CaptionGrid, images: list[int] | np.ndarray, labels: LabelView,
                    category_index: dict[str, int], label_index: dict[str, int]) -> BrowserCaptions:
    """The captions of ``images`` (indices into the grid's images) at every layer, each caption once.
    ``label_index`` (label set text -> number) grows with the label sets met, so that several runs
    can share one list."""
    rows = grid.rows[np.asarray(images, dtype=np.int64)].reshape(-1)
    number_of: dict[str, int] = {}
    cap = np.full(rows.shape, -1, dtype=np.int64)
    for cell in np.flatnonzero(rows >= 0).tolist():
        caption = grid.captions[rows[cell]]
        number = number_of.get(caption)
        if number is None:
            number = number_of[caption] = len(number_of)
        cap[cell] = number
    captions = list(number_of)
    parts = labels.parts_of(captions)
    spans = [caption_spans(caption, parts.get(caption, []), category_index, label_index) for caption in captions]
    return BrowserCaptions(captions, spans, cap, rows)
