"""Per-layer category shares by the original study's method.

For each caption: take the FIRST label of every part, map it to a merged category
(labels not in the merge table count as UNKNOWN), turn the category counts into
percentages of the caption's parts. A layer's value for a category is the mean of those
percentages over the layer's captions. Captions without parts or whose answer did not
parse are left out (``n_captions`` counts the captions that were used).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import pyarrow as pa

from ..common.contracts import AGGREGATE_SCHEMA, NOT_AGGREGATED, part_category
from .labelset import Part
from .merge_table import merge_categories


def counts_in_aggregate(parts: Sequence[Part] | None, status: str) -> bool:
    return bool(parts) and not any(flag in NOT_AGGREGATED for flag in status.split(";"))


def caption_shares(parts: Sequence[Part], category_of: dict[str, str]) -> dict[str, float]:
    """Percent of a caption's parts per merged category (by each part's first label)."""
    counts: dict[str, int] = defaultdict(int)
    for part in parts:
        counts[part_category(part.labels, category_of)] += 1
    n = sum(counts.values())
    return {c: 100.0 * k / n for c, k in counts.items()}


def aggregate(rows: Iterable[tuple[int, Sequence[Part] | None, str]], category_of: dict[str, str]) -> pa.Table:
    """``rows``: one ``(layer, parts, status)`` per caption occurrence (an image's caption at a
    layer; identical captions count once per occurrence). Returns the AGGREGATE_SCHEMA
    table: every (layer, category) of the merge table, layers ascending."""
    sums: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    n: dict[int, int] = defaultdict(int)
    layers: set[int] = set()
    for layer, parts, status in rows:
        layers.add(layer)
        if not counts_in_aggregate(parts, status):
            continue
        n[layer] += 1
        for cat, share in caption_shares(parts, category_of).items():
            sums[layer][cat] += share
    cats = merge_categories(category_of)
    out = {"layer": [], "category": [], "share_percent": [], "n_captions": []}
    for layer in sorted(layers):
        for cat in cats:
            out["layer"].append(layer)
            out["category"].append(cat)
            out["share_percent"].append(sums[layer][cat] / n[layer] if n[layer] else 0.0)
            out["n_captions"].append(n[layer])
    return pa.table(out).cast(AGGREGATE_SCHEMA)


def shares_by_layer(table: pa.Table) -> dict[int, dict[str, float]]:
    """``{layer: {category: share}}`` of an aggregate table (for reading and tests)."""
    out: dict[int, dict[str, float]] = defaultdict(dict)
    for layer, cat, share in zip(table.column("layer").to_pylist(), table.column("category").to_pylist(),
                                 table.column("share_percent").to_pylist()):
        out[layer][cat] = share
    return dict(out)


def layer_status_counts(rows: Iterable[tuple[int, Sequence[Part] | None, str]]) -> dict[int, dict[str, int]]:
    """``{layer: {status: caption rows}}`` (every caption occurrence, counted or not)."""
    out: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for layer, _, status in rows:
        out[layer][status] += 1
    return {layer: dict(sorted(c.items())) for layer, c in sorted(out.items())}
