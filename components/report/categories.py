"""Categories: the label-to-category map, per-layer category shares, their order and colours."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..common import storage
from ..common.contracts import AGGREGATE_SCHEMA
from ..common.contracts import NOT_AGGREGATED as _CONTRACT_NOT_AGGREGATED

UNKNOWN = "UNKNOWN"
OTHER = "other"

# Status flags whose answers the study's aggregation leaves out (the labels contract);
# "invalid_json" is accepted as a synonym of "unparseable".
NOT_AGGREGATED = _CONTRACT_NOT_AGGREGATED + ("invalid_json",)


def answer_counts(parts, status: str | None) -> bool:
    """Whether a labelled caption enters the per-layer shares (the study's rule)."""
    return bool(parts) and not any(f in NOT_AGGREGATED for f in (status or "").split(";"))


# ------------------------------------------------------------------ label -> category

def parse_category_map(mapping: dict) -> dict[str, str]:
    """``{category: [label, ...]}`` (the merge-table YAML) -> ``{label: category}``.

    Also accepts the inverse form ``{label: category}``.
    """
    out: dict[str, str] = {}
    for k, v in (mapping or {}).items():
        if isinstance(v, (list, tuple)):
            for label in v:
                out[str(label if label is not None else "")] = str(k)
        elif isinstance(v, str):
            out[str(k)] = v
        else:
            raise ValueError(f"category map: entry {k!r} is neither a list of labels nor a category name")
    return out


def load_category_map(uri: str) -> dict[str, str]:
    import yaml

    if not storage.exists(uri):
        raise FileNotFoundError(f"--categories {uri}: no such file; pass the label-to-category YAML "
                                "(category: [labels]) the categorize step used")
    data = yaml.safe_load(storage.read_bytes(uri))
    if not isinstance(data, dict):
        raise ValueError(f"--categories {uri}: expected a mapping category: [labels]")
    return parse_category_map(data)


def category_map_from_metadata(meta: dict) -> dict[str, str] | None:
    """The merge table when the aggregate table's metadata carries one (inline, or as the
    URI of the YAML the categorize step was given, when that is readable from here)."""
    for holder in (meta, meta.get("parameters") or {}):
        for key in ("category_map", "categories", "merged_categories", "merge"):
            val = holder.get(key)
            if isinstance(val, dict) and val:
                return parse_category_map(val)
            if isinstance(val, str) and val.endswith((".yaml", ".yml")):
                try:
                    if storage.exists(val):
                        return load_category_map(val)
                except Exception:  # a path from another machine: fall back to raw labels
                    pass
    return None


def part_category(labels, label_map: dict[str, str] | None) -> str:
    """The category of one caption part: its FIRST label, merged (the study's rule)."""
    first = labels[0] if labels else ""
    first = first if first is not None else ""
    if label_map is None:
        return first or UNKNOWN
    return label_map.get(first, UNKNOWN)


# ------------------------------------------------------------------ shares per layer

def share_from_labels(captions: pa.Table, labels: pa.Table, label_map: dict[str, str] | None) -> pa.Table:
    """The per-layer aggregate by the study's method, from captions joined to labels.

    Per (image, layer) caption: first label of every part -> category; category counts
    as percentages of the caption's parts; a layer's value for a category is the mean
    over the layer's captions whose answer counts (no parts, unparseable or truncated: dropped).
    """
    cats_of: dict[str, list[str]] = {}
    for cap, parts, status in zip(labels.column("caption").to_pylist(), labels.column("parts").to_pylist(),
                                  labels.column("status").to_pylist()):
        if cap in cats_of:
            continue
        cats_of[cap] = ([part_category(p.get("labels") or [], label_map) for p in parts]
                        if answer_counts(parts, status) else [])
    sums: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: dict[int, int] = defaultdict(int)
    for layer, cap in zip(captions.column("layer").to_pylist(), captions.column("caption").to_pylist()):
        cats = cats_of.get(cap)
        if not cats:
            continue
        counts[layer] += 1
        per = 100.0 / len(cats)
        for c in cats:
            sums[layer][c] += per
    rows = {"layer": [], "category": [], "share_percent": [], "n_captions": []}
    for layer in sorted(sums):
        for cat in sorted(sums[layer]):
            rows["layer"].append(layer)
            rows["category"].append(cat)
            rows["share_percent"].append(sums[layer][cat] / counts[layer])
            rows["n_captions"].append(counts[layer])
    return pa.table(rows, schema=AGGREGATE_SCHEMA)


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
    agg = aggregate.to_pylist()
    cats = sorted({r["category"] for r in agg})
    index = {layer: i for i, layer in enumerate(layers)}
    for r in agg:
        if r["layer"] not in index:
            raise ValueError(
                f"aggregate table has layer {r['layer']}, which no caption has (layers {layers[0]}..{layers[-1]}); "
                "pass the aggregate made from these captions"
            )
    values = np.full((len(layers), len(cats)), np.nan)
    n_caps = [0] * len(layers)
    cidx = {c: j for j, c in enumerate(cats)}
    for r in agg:
        if r["n_captions"] <= 0:  # a layer without any usable answer: no data, not 0%
            continue
        i = index[r["layer"]]
        if np.isnan(values[i]).all():
            values[i] = 0.0
        values[i, cidx[r["category"]]] += r["share_percent"]
        n_caps[i] = max(n_caps[i], int(r["n_captions"]))
    order = stack_order(cats, values, layers)
    values = values[:, [cidx[c] for c in order]] if cats else values
    return ShareMatrix(layers, order, values, n_caps)


def stack_order(categories: list[str], values: np.ndarray, layers: list[int]) -> list[str]:
    """Bottom-to-top order: categories whose share peaks earlier lie lower.

    Key: the share-weighted mean layer of a category (ties: larger total first).
    """
    if not categories:
        return []
    x = np.asarray(layers, dtype=float)
    v = np.nan_to_num(values)
    keys = []
    for j, c in enumerate(categories):
        tot = v[:, j].sum()
        centre = float((v[:, j] * x).sum() / tot) if tot > 0 else float("inf")
        keys.append((centre, -tot, c))
    return [c for _, _, c in sorted(keys)]


def group_small(m: ShareMatrix, min_peak_percent: float) -> ShareMatrix:
    """Categories that never reach ``min_peak_percent`` in any layer merged into ``other``
    (so the chart stays readable and its areas still sum to the layer's total)."""
    if not m.categories or min_peak_percent <= 0:
        return m
    peak = np.nan_to_num(m.values).max(axis=0)
    keep = [j for j, _ in enumerate(m.categories) if peak[j] >= min_peak_percent]
    small = [j for j in range(len(m.categories)) if j not in keep]
    if len(small) <= 1:
        return m
    cats = [m.categories[j] for j in keep] + [f"{OTHER} ({len(small)} categories < {min_peak_percent:g}%)"]
    vals = np.concatenate([m.values[:, keep], m.values[:, small].sum(axis=1, keepdims=True)], axis=1)
    return ShareMatrix(m.layers, cats, vals, m.n_captions)


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
    free = [c for c in _PALETTE if c not in _FIXED.values()]
    ranked = sorted(categories, key=lambda c: -(weight or {}).get(c, 0.0)) if weight else list(categories)
    assigned: dict[str, str] = {}
    i = 0
    for c in ranked:
        if c in _FIXED:
            assigned[c] = _FIXED[c]
        elif c.startswith(OTHER):
            assigned[c] = "#7f7f7f"
        else:
            assigned[c] = free[i % len(free)]
            i += 1
    return {c: assigned[c] for c in categories}
