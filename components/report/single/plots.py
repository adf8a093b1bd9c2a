"""The report's figures (matplotlib, Agg): returned as figures, saved as PNG and SVG."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..inputs.layer_naming import LayerNaming  # noqa: E402
from ..metrics.category_shares import ShareMatrix  # noqa: E402
from ..metrics.layer_stats import LayerStats  # noqa: E402

plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "lverb-report", "font.size": 11})

LAYER_AXIS = "layer (0 = first residual block)"


def _layer_axis(ax, layers: list[int], naming: LayerNaming | None = None) -> None:
    """The layer axis by the model's own numbering (``naming``; default: 0-based blocks), with the
    relative depth (k + 1) / N on a second axis at the top."""
    ax.set_xlabel(naming.axis_title() if naming else LAYER_AXIS)
    if len(layers) <= 32:
        ax.set_xticks(layers)
        if naming and naming.recorded:
            ax.set_xticklabels([naming.label(layer).rsplit(" ", 1)[-1] for layer in layers])
    if len(layers) > 1:
        ax.set_xlim(layers[0], layers[-1])
    ax.grid(True, color="#999999", linewidth=0.6, alpha=0.6)
    if naming is not None:
        n = naming.n_layers
        top = ax.secondary_xaxis("top", functions=(lambda k: (k + 1) / n, lambda d: d * n - 1))
        top.set_xlabel("relative depth ((k + 1) / N)", fontsize=9)
        top.tick_params(labelsize=8)


def category_share(matrix: ShareMatrix, colours: dict[str, str], naming: LayerNaming | None = None) -> plt.Figure:
    """Stacked area of category share per layer; legend listed top-down as the areas."""
    fig, ax = plt.subplots(figsize=(14, 6))
    x = np.asarray(matrix.layers, dtype=float)
    if not matrix.categories:
        ax.text(0.5, 0.5, "no labelled captions", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylim(0, 100)
        _layer_axis(ax, matrix.layers, naming)
        fig.tight_layout()
        return fig
    values = matrix.values
    missing = np.isnan(values).all(axis=1)
    handles: list = []  # bars or filled areas, one per category
    if len(x) == 1:
        bottom = 0.0
        for j, c in enumerate(matrix.categories):
            v = 0.0 if missing[0] else values[0, j]
            handles.append(ax.bar(x, [v], bottom=bottom, width=0.6, color=colours[c], label=c,
                                  edgecolor="white", linewidth=0.3))
            bottom += v
        ax.set_xlim(x[0] - 1, x[0] + 1)
        ax.set_xticks(matrix.layers)
    else:
        lower = np.zeros(len(x))
        for j, c in enumerate(matrix.categories):
            upper = lower + np.nan_to_num(values[:, j])
            area = ax.fill_between(x, lower, upper, where=~missing, interpolate=False, color=colours[c],
                                label=c, linewidth=0.3, edgecolor="white")
            handles.append(area)
            lower = upper
        # a layer without labels is a gap, marked so it does not read as "0%"
        for i in np.flatnonzero(missing):
            ax.axvspan(x[i] - 0.5, x[i] + 0.5, facecolor="#eeeeee", hatch="//", edgecolor="#bbbbbb", linewidth=0)
            ax.text(x[i], 50, "no labels", rotation=90, ha="center", va="center", fontsize=9, color="#555555")
        _layer_axis(ax, matrix.layers, naming)
    ax.set_ylim(0, 100)
    ax.set_ylabel("mean share of caption parts (%)")
    # legend top-down = areas top-down
    ax.legend(handles[::-1], [handle.get_label() for handle in handles][::-1], loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=10)
    fig.tight_layout()
    return fig


def entropy(stats: LayerStats, naming: LayerNaming | None = None) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    x = np.asarray(stats.layers, dtype=float)
    spread = {k: np.asarray(v, dtype=float) for k, v in stats.entropy.items()}
    ax.fill_between(x, spread["p10"], spread["p90"], color="#1f77b4", alpha=0.15, label="10-90th percentile")
    ax.fill_between(x, spread["p25"], spread["p75"], color="#1f77b4", alpha=0.3, label="25-75th percentile")
    ax.plot(x, spread["median"], color="#1f77b4", linestyle="--", linewidth=1.2, label="median")
    ax.plot(x, spread["mean"], color="#d62728", marker="o", markersize=3.5, linewidth=1.6, label="mean")
    ax.set_ylabel("caption entropy (bits per token)")
    ax.set_ylim(bottom=0)
    _layer_axis(ax, stats.layers, naming)
    if len(x) == 1:
        ax.set_xlim(x[0] - 1, x[0] + 1)
    ax.legend(frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


def distance_to_final(stats: LayerStats, naming: LayerNaming | None = None) -> plt.Figure:
    with_refs = stats.cider_to_refs is not None
    fig, axes = plt.subplots(1, 2 if with_refs else 1, figsize=(13 if with_refs else 9, 4.5), squeeze=False)
    x = np.asarray(stats.layers, dtype=float)
    ax = axes[0, 0]
    ax.plot(x, stats.f1_to_final, marker="o", markersize=3.5, color="#2ca02c", label="token F1 (mean over images)")
    ax.plot(x, stats.bleu4_to_final, marker="s", markersize=3.5, color="#9467bd", label="BLEU-4 (corpus)")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("agreement with the last layer's caption")
    ax.set_title("each layer's caption vs the last layer's", fontsize=11)
    _layer_axis(ax, stats.layers, naming)
    ax.legend(frameon=False, fontsize=9, loc="upper left")
    if with_refs:
        ax = axes[0, 1]
        ax.plot(x, stats.bleu4_to_refs, marker="s", markersize=3.5, color="#9467bd", label="BLEU-4 (corpus)")
        ax.set_ylabel("BLEU-4")
        ax.set_ylim(bottom=0)
        ax2 = ax.twinx()
        ax2.plot(x, stats.cider_to_refs, marker="o", markersize=3.5, color="#ff7f0e", label="CIDEr-D")
        ax2.set_ylabel("CIDEr-D")
        ax2.set_ylim(bottom=0)
        ax.set_title(f"vs reference captions ({stats.n_with_refs} images)", fontsize=11)
        _layer_axis(ax, stats.layers, naming)
        bleu_handles, bleu_labels = ax.get_legend_handles_labels()
        cider_handles, cider_labels = ax2.get_legend_handles_labels()
        ax.legend(bleu_handles + cider_handles, bleu_labels + cider_labels, frameon=False, fontsize=9, loc="upper left")
    for panel in axes.flat:
        if len(x) == 1:
            panel.set_xlim(x[0] - 1, x[0] + 1)
    fig.tight_layout()
    return fig


def stays_close(stats: LayerStats, naming: LayerNaming | None = None) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    layers = stats.layers
    settled = [v for v in stats.stays_close if v is not None]
    counts = np.array([sum(1 for v in settled if v == layer) for layer in layers], dtype=float)
    n_images = max(len(stats.stays_close), 1)
    ax.bar(layers, counts / n_images * 100, color="#17becf", label="images whose caption settles at this layer")
    ax.plot(layers, np.cumsum(counts) / n_images * 100, color="#333333", marker="o", markersize=3,
            label="cumulative: settled by this layer")
    ax.set_ylabel("% of images")
    ax.set_ylim(0, 100)
    ax.set_title(f"first layer from which the caption stays close to the final one (token F1 >= {stats.close_threshold:g})",
                 fontsize=11)
    _layer_axis(ax, layers, naming)
    if len(layers) == 1:
        ax.set_xlim(layers[0] - 1, layers[0] + 1)
    else:
        ax.set_xlim(layers[0] - 0.6, layers[-1] + 0.6)
    ax.legend(frameon=False, fontsize=9, loc="upper left")
    fig.tight_layout()
    return fig


def render(fig: plt.Figure) -> tuple[bytes, bytes]:
    """(PNG, SVG) bytes of a figure; the figure is closed."""
    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=150)
    fig.savefig(svg, format="svg", metadata={"Date": None})
    plt.close(fig)
    return png.getvalue(), svg.getvalue()
