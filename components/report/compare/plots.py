"""The comparison's figures: both runs' category shares on relative depth, their difference,
and both entropy curves overlaid (matplotlib figures; ``plots.render`` writes them)."""

from __future__ import annotations

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.colors import TwoSlopeNorm

from ..metrics.depth_shares import DepthShares
from ..metrics.run_view import RunView

DEPTH_AXIS = "relative depth ((k + 1) / N; last block = 1.0)"
RUN_COLOURS = ("#1f5fbf", "#d95f02")  # run A, run B


def _depth_axis(ax) -> None:
    ax.set_xlim(0, 1.0)
    ax.set_xticks(np.linspace(0, 1, 11))
    ax.set_xlabel(DEPTH_AXIS)
    ax.grid(True, color="#999999", linewidth=0.6, alpha=0.6)


def _stacked(ax, depths: list[float], values: np.ndarray, categories: list[str], colours: dict[str, str]) -> list:
    x = np.asarray(depths, dtype=float)
    missing = np.isnan(values).all(axis=1) if values.size else np.ones(len(x), bool)
    handles = []
    if len(x) == 1:
        bottom = 0.0
        for j, c in enumerate(categories):
            v = 0.0 if missing[0] else float(values[0, j])
            handles.append(ax.bar(x, [v], bottom=bottom, width=0.04, color=colours[c], label=c,
                                  edgecolor="white", linewidth=0.3))
            bottom += v
        return handles
    lower = np.zeros(len(x))
    for j, c in enumerate(categories):
        upper = lower + np.nan_to_num(values[:, j])
        handles.append(ax.fill_between(x, lower, upper, where=~missing, interpolate=False, color=colours[c], label=c,
                                       linewidth=0.3, edgecolor="white"))
        lower = upper
    width = (x[-1] - x[0]) / max(len(x) - 1, 1)
    for i in np.flatnonzero(missing):
        ax.axvspan(x[i] - width / 2, x[i] + width / 2, facecolor="#eeeeee", hatch="//", edgecolor="#bbbbbb",
                   linewidth=0)
    return handles


def shares_side_by_side(a: RunView, b: RunView, categories: list[str], values_a: np.ndarray, values_b: np.ndarray,
                        colours: dict[str, str]) -> plt.Figure:
    """Two stacked-area charts of category share, one per run, on the common 0..1 depth axis."""
    fig, axes = plt.subplots(1, 2, figsize=(16, 5.5), sharey=True)
    handles = []
    for ax, run, values in ((axes[0], a, values_a), (axes[1], b, values_b)):
        if categories:
            handles = _stacked(ax, run.depths, values, categories, colours) or handles
        else:
            ax.text(0.5, 0.5, "no labelled captions", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{run.name} ({run.naming.family}, {len(run.grid.layers)} of {run.naming.n_layers} blocks)",
                     fontsize=11)
        ax.set_ylim(0, 100)
        _depth_axis(ax)
    axes[0].set_ylabel("mean share of caption parts (%)")
    if handles:
        axes[1].legend(handles[::-1], [h.get_label() for h in handles][::-1], loc="upper left",
                       bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


def difference_rows(shares: DepthShares, chart_categories: list[str]) -> tuple[list[str], np.ndarray]:
    """The heatmap's rows: the charts' categories, and their "other" group as the sum of the differences
    of the categories in it (a difference of sums is the sum of the differences)."""
    diff = shares.difference
    kept = [j for j, c in enumerate(shares.categories) if c in chart_categories]
    rows, values = [shares.categories[j] for j in kept], [diff[:, j] for j in kept]
    rest = [j for j in range(len(shares.categories)) if j not in kept]
    if rest:
        other = next((c for c in chart_categories if c not in shares.categories), f"other ({len(rest)} categories)")
        rows.append(other)
        values.append(diff[:, rest].sum(axis=1))
    return rows, np.array(values).reshape(len(rows), len(shares.depths))


def share_difference(shares: DepthShares, chart_categories: list[str], name_a: str, name_b: str) -> plt.Figure:
    """B minus A per category (rows, top = top of the charts' stack) on the common depth grid (columns);
    grey: no value (outside a run's depth range)."""
    categories, diff = difference_rows(shares, chart_categories)
    n_cat, n_depth = len(categories), len(shares.depths)
    fig, ax = plt.subplots(figsize=(max(9.0, min(0.35 * n_depth + 4, 18)), max(3.0, 0.32 * n_cat + 1.8)))
    diff = diff[::-1]
    if n_cat and n_depth:
        limit = float(np.nanmax(np.abs(diff))) if not np.isnan(diff).all() else 1.0
        limit = max(limit, 1.0)
        cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#dddddd")
        image = ax.imshow(np.ma.masked_invalid(diff), aspect="auto", cmap=cmap,
                          norm=TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit), interpolation="nearest")
        fig.colorbar(image, ax=ax, label=f"{name_b} minus {name_a} (percentage points)", fraction=0.04, pad=0.02)
        step = max(1, n_depth // 24)
        ax.set_xticks(range(0, n_depth, step))
        ax.set_xticklabels([f"{d:.2f}" for d in shares.depths[::step]], rotation=90, fontsize=8)
        ax.set_yticks(range(n_cat))
        ax.set_yticklabels(categories[::-1], fontsize=9)
    else:
        ax.text(0.5, 0.5, "no labelled captions", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("relative depth (the union of both runs' layer depths)")
    ax.set_title(f"category share: {name_b} minus {name_a}", fontsize=11)
    fig.tight_layout()
    return fig


def entropy_overlay(a: RunView, b: RunView) -> plt.Figure:
    """Both runs' caption entropy per layer on relative depth: mean line, 25-75th percentile band."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for run, colour, marker in ((a, RUN_COLOURS[0], "o"), (b, RUN_COLOURS[1], "s")):
        x = np.asarray(run.depths, dtype=float)
        spread = {k: np.asarray(v, dtype=float) for k, v in run.stats.entropy.items()}
        ax.fill_between(x, spread["p25"], spread["p75"], color=colour, alpha=0.18,
                        label=f"{run.name}: 25-75th percentile")
        ax.plot(x, spread["mean"], color=colour, marker=marker, markersize=3.5, linewidth=1.6,
                label=f"{run.name}: mean")
    ax.set_ylabel("caption entropy (bits per token)")
    ax.set_ylim(bottom=0)
    _depth_axis(ax)
    ax.legend(frameon=False, fontsize=9)
    fig.tight_layout()
    return fig
