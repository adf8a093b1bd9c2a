"""Two runs' category shares on one relative-depth axis, and their difference.

The common grid is the union of both runs' layer depths ((k + 1) / N per captioned block k),
so every grid point is a real layer of at least one run. At a point where a run has no layer,
its shares are interpolated linearly between its two neighbouring layers; outside its own depth
range, or next to a layer without labels, it has no value (NaN: never extrapolated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import category_shares as cat

DEPTH_DIGITS = 9  # depths equal to this many digits are one grid point ((k+1)/N of two models)

INTERPOLATION_NOTE = ("Relative depth of block k of an N-block encoder is (k + 1) / N (the last block is 1.0). "
                      "The difference is taken on the union of both runs' layer depths: where a run has no layer "
                      "at a depth, its shares are interpolated linearly between its two neighbouring layers; "
                      "outside a run's own depth range (or next to a layer without labels) there is no value, "
                      "nothing is extrapolated.")


@dataclass
class DepthShares:
    depths: list[float]                 # the common grid, ascending
    categories: list[str]               # both runs' categories, stacking order (bottom first)
    a: np.ndarray                       # [n_depths, n_categories] percent; NaN: no value
    b: np.ndarray
    a_layer: list[int | None]           # run A's layer exactly at this depth (None: interpolated or outside)
    b_layer: list[int | None]

    @property
    def difference(self) -> np.ndarray:
        """B minus A, percentage points (NaN where either has no value)."""
        return self.b - self.a

    def rows(self) -> list[dict]:
        """The CSV: one row per (depth, category)."""
        out = []
        diff = self.difference
        for i, depth in enumerate(self.depths):
            for j, category in enumerate(self.categories):
                out.append({
                    "relative_depth": round(depth, DEPTH_DIGITS), "category": category,
                    "layer_a": "" if self.a_layer[i] is None else self.a_layer[i],
                    "share_a_percent": _cell(self.a[i, j]),
                    "layer_b": "" if self.b_layer[i] is None else self.b_layer[i],
                    "share_b_percent": _cell(self.b[i, j]),
                    "b_minus_a_points": _cell(diff[i, j]),
                })
        return out

    def max_abs_difference(self) -> tuple[float, str, float] | None:
        """(points, category, depth) of the largest |B - A| (None: no depth where both have values)."""
        diff = np.abs(self.difference)
        if not diff.size or np.isnan(diff).all():
            return None
        i, j = np.unravel_index(np.nanargmax(diff), diff.shape)
        return float(self.difference[i, j]), self.categories[j], self.depths[i]


def _cell(value: float):
    return "" if math.isnan(value) else float(value)


def aligned(shares: cat.ShareMatrix, categories: list[str]) -> np.ndarray:
    """A run's share matrix over ``categories`` (a category it never has: 0 where the layer has labels)."""
    index = {c: j for j, c in enumerate(shares.categories)}
    out = np.full((len(shares.layers), len(categories)), np.nan)
    for i in range(len(shares.layers)):
        if not shares.categories or math.isnan(shares.values[i, 0]):
            continue
        out[i] = [shares.values[i, index[c]] if c in index else 0.0 for c in categories]
    return out


def common_categories(a: cat.ShareMatrix, depths_a: list[float], b: cat.ShareMatrix, depths_b: list[float]) -> list[str]:
    """Both runs' categories in one stacking order (the single report's rule, on relative depth)."""
    categories = sorted(set(a.categories) | set(b.categories))
    values = np.vstack([aligned(a, categories), aligned(b, categories)])
    return cat.stack_order(categories, values, list(depths_a) + list(depths_b))


def depth_grid(depths_a: list[float], depths_b: list[float]) -> list[float]:
    return sorted({round(d, DEPTH_DIGITS) for d in list(depths_a) + list(depths_b)})


def at_depths(depths: list[float], layers: list[int], values: np.ndarray,
              grid: list[float]) -> tuple[np.ndarray, list[int | None]]:
    """A run's rows (one per layer, at ``depths``) on ``grid``: its own row where it has a layer at that
    depth, linear interpolation between its neighbours inside its range, NaN elsewhere."""
    out = np.full((len(grid), values.shape[1]), np.nan)
    exact: list[int | None] = []
    own = [round(d, DEPTH_DIGITS) for d in depths]
    for g, depth in enumerate(grid):
        if depth in own:
            i = own.index(depth)
            out[g] = values[i]
            exact.append(layers[i])
            continue
        exact.append(None)
        upper = next((i for i, d in enumerate(own) if d > depth), None)
        if upper is None or upper == 0:
            continue  # outside the run's range: no value
        lower = upper - 1
        t = (depth - own[lower]) / (own[upper] - own[lower])
        out[g] = (1 - t) * values[lower] + t * values[upper]  # NaN next to a layer without labels
    return out, exact


def compare_shares(a: cat.ShareMatrix, depths_a: list[float], b: cat.ShareMatrix,
                   depths_b: list[float]) -> DepthShares:
    categories = common_categories(a, depths_a, b, depths_b)
    grid = depth_grid(depths_a, depths_b)
    values_a, layer_a = at_depths(depths_a, a.layers, aligned(a, categories), grid)
    values_b, layer_b = at_depths(depths_b, b.layers, aligned(b, categories), grid)
    return DepthShares(grid, categories, values_a, values_b, layer_a, layer_b)


def grouped_for_charts(a: cat.ShareMatrix, b: cat.ShareMatrix, categories: list[str],
                       min_peak_percent: float) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Both runs' rows over one category list for the side-by-side charts: a category below
    ``min_peak_percent`` in every layer of both runs joins one "other" area (the same in both)."""
    values_a, values_b = aligned(a, categories), aligned(b, categories)
    both = cat.ShareMatrix(list(range(len(a.layers) + len(b.layers))), categories,
                           np.vstack([values_a, values_b]), list(a.n_captions) + list(b.n_captions))
    grouped = cat.group_small(both, min_peak_percent)
    return grouped.categories, grouped.values[:len(a.layers)], grouped.values[len(a.layers):]
