"""Presenting the categorize step's per-layer category shares: the share matrix, stacking order,
grouping of small categories, colours, and the category a caption part is coloured with."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

# The categorize step owns the categories (its merge table, the aggregation); the report only
# reads its aggregate table and the map stored in that table's metadata (inputs/tables.py).
from ...common.contracts import UNKNOWN

OTHER = "other"


@dataclass
class ShareMatrix:
    layers: list[int]          # every layer of the captions, ascending
    categories: list[str]      # stacking order, bottom first
    values: np.ndarray         # [n_layers, n_categories] percent; NaN rows: layer without labels
    n_captions: list[int]      # captions with labels per layer (0: none)

    def layer_sums(self) -> np.ndarray:
        return self.values.sum(axis=1)

    def rows(self) -> list[dict]:
        """The table, long form: one row per (layer, category) with data."""
        out = []
        if not self.categories:
            return out
        for i, layer in enumerate(self.layers):
            if math.isnan(self.values[i, 0]):
                continue
            for j, cat in enumerate(self.categories):
                out.append({"layer": layer, "category": cat, "share_percent": float(self.values[i, j]),
                            "n_captions": self.n_captions[i]})
        return out


def share_matrix(aggregate: pa.Table, layers: list[int]) -> ShareMatrix:
    """Aggregate rows -> a matrix over ``layers`` (categories in stacking order)."""
    aggregate_rows = aggregate.to_pylist()
    categories = sorted({row["category"] for row in aggregate_rows})
    layer_index = {layer: i for i, layer in enumerate(layers)}
    for row in aggregate_rows:
        if row["layer"] not in layer_index:
            raise ValueError(
                f"aggregate table has layer {row['layer']}, which no caption has (layers {layers[0]}..{layers[-1]}); "
                "pass the aggregate made from these captions"
            )
    values = np.full((len(layers), len(categories)), np.nan)
    n_captions = [0] * len(layers)
    category_index = {c: j for j, c in enumerate(categories)}
    for row in aggregate_rows:
        if row["n_captions"] <= 0:  # a layer without any usable answer: no data, not 0%
            continue
        i = layer_index[row["layer"]]
        if np.isnan(values[i]).all():
            values[i] = 0.0
        values[i, category_index[row["category"]]] += row["share_percent"]
        n_captions[i] = max(n_captions[i], int(row["n_captions"]))
    order = stack_order(categories, values, layers)
    values = values[:, [category_index[c] for c in order]] if categories else values
    return ShareMatrix(layers, order, values, n_captions)


def stack_order(categories: list[str], values: np.ndarray, layers: Sequence[float]) -> list[str]:
    """Bottom-to-top order: categories whose share peaks earlier lie lower.

    Key: the share-weighted mean layer of a category (ties: larger total first).
    """
    if not categories:
        return []
    layer_numbers = np.asarray(layers, dtype=float)
    shares = np.nan_to_num(values)
    keys = []
    for j, category in enumerate(categories):
        total = shares[:, j].sum()
        centre = float((shares[:, j] * layer_numbers).sum() / total) if total > 0 else float("inf")
        keys.append((centre, -total, category))
    return [category for _, _, category in sorted(keys)]


def group_small(matrix: ShareMatrix, min_peak_percent: float) -> ShareMatrix:
    """Categories that never reach ``min_peak_percent`` in any layer merged into ``other``
    (so the chart stays readable and its areas still sum to the layer's total)."""
    if not matrix.categories or min_peak_percent <= 0:
        return matrix
    peak = np.nan_to_num(matrix.values).max(axis=0)
    keep = [j for j in range(len(matrix.categories)) if peak[j] >= min_peak_percent]
    small = [j for j in range(len(matrix.categories)) if j not in keep]
    if len(small) <= 1:
        return matrix
    categories = [matrix.categories[j] for j in keep] + [f"{OTHER} ({len(small)} categories < {min_peak_percent:g}%)"]
    values = np.concatenate([matrix.values[:, keep], matrix.values[:, small].sum(axis=1, keepdims=True)], axis=1)
    return ShareMatrix(matrix.layers, categories, values, matrix.n_captions)


# ------------------------------------------------------------------ colours

_PALETTE = [  # tab20 reordered so neighbours differ, then tab20b
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
    "#dbdb8d", "#9edae5", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#5254a3",
    "#8ca252", "#bd9e39", "#ad494a", "#a55194", "#6b6ecf", "#b5cf6b", "#e7ba52", "#d6616b",
    "#ce6dbd", "#9c9ede", "#cedb9c", "#e7cb94", "#e7969c", "#de9ed6",
]
_FIXED = {UNKNOWN: "#c7c7c7", "color": "#1f77b4"}


def category_colours(categories: list[str], weight: dict[str, float] | None = None) -> dict[str, str]:
    """A colour per category: the most distinct colours go to the heaviest categories
    (``weight``, e.g. total share; default: list order); UNKNOWN grey, ``other`` dark grey."""
    free = [colour for colour in _PALETTE if colour not in _FIXED.values()]
    ranked = sorted(categories, key=lambda c: -(weight or {}).get(c, 0.0)) if weight else list(categories)
    assigned: dict[str, str] = {}
    next_free = 0
    for category in ranked:
        if category in _FIXED:
            assigned[category] = _FIXED[category]
        elif category.startswith(OTHER):
            assigned[category] = "#7f7f7f"
        else:
            assigned[category] = free[next_free % len(free)]
            next_free += 1
    return {category: assigned[category] for category in categories}
