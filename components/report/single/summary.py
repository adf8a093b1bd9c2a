"""The report's headline numbers (KFP Metrics), per-layer rows (layer_stats.csv) and the short
Markdown summary (KFP Markdown)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..inputs.caption_precision import CaptionPrecision
from ..inputs.layer_naming import LayerNaming
from ..metrics import category_shares as cat
from ..metrics.labels import LabelView
from ..metrics.layer_stats import CaptionGrid, LayerStats
from ..page.markdown_text import md_text

COLOUR_NAMES = ("color", "colour")


def metric_text(metrics: dict[str, float], key: str, digits: int = 2, suffix: str = "") -> str:
    """A metric for people: ``digits`` decimals (0: a whole number with thousands separators); – when absent."""
    value = metrics.get(key)
    if value is None:
        return "–"
    return (f"{int(value):,}" if digits == 0 else f"{value:.{digits}f}") + suffix


def main_category_by_layer(shares: cat.ShareMatrix | None) -> list[str | None]:
    """Per layer the largest category other than UNKNOWN/other (None: no labels at the layer)."""
    if shares is None or not shares.categories:
        return []
    known = [j for j, c in enumerate(shares.categories) if c != cat.UNKNOWN and not c.startswith(cat.OTHER)]
    top: list[str | None] = []
    for row in shares.values:
        if np.isnan(row).all() or not known:
            top.append(None)
        else:
            top.append(shares.categories[max(known, key=lambda k: row[k])])
    return top


def layer_colour_stops_dominating(shares: cat.ShareMatrix | None) -> int | None:
    """The first layer from which colour is never the main category again (None: colour never
    leads, or still leads at the last layer)."""
    top = main_category_by_layer(shares)
    is_colour = [t is not None and t.lower() in COLOUR_NAMES for t in top]
    if not any(is_colour) or is_colour[-1]:
        return None
    last = max(i for i, v in enumerate(is_colour) if v)
    return shares.layers[last + 1]


def headline_metrics(grid: CaptionGrid, stats: LayerStats, labels: LabelView | None,
                     shares: cat.ShareMatrix | None) -> dict[str, float]:
    present = grid.rows[grid.rows >= 0]
    n_rows = int(present.size)
    metrics: dict[str, float | None] = {
        "images": len(grid.image_keys),
        "layers": len(grid.layers),
        "captions": n_rows,
        "unique_captions": len({grid.captions[r] for r in present}),
        "entropy_first_layer_mean": stats.entropy["mean"][0],
        "entropy_last_layer_mean": stats.entropy["mean"][-1],
        "captions_stopped_by_length_percent": 100.0 * sum(grid.stops[r] == "length" for r in present) / max(n_rows, 1),
    }
    settled = [v for v in stats.stays_close if v is not None]
    if settled:
        metrics["median_layer_caption_settles"] = float(np.median(settled))
    if len(grid.layers) > 1:
        metrics["f1_to_final_mid_layer"] = stats.f1_to_final[len(grid.layers) // 2]
    if stats.cider_to_refs is not None:
        metrics["images_with_references"] = stats.n_with_refs
        metrics["cider_d_last_layer"] = stats.cider_to_refs[-1]
        metrics["bleu4_last_layer"] = stats.bleu4_to_refs[-1]
        metrics["best_cider_d_layer"] = grid.layers[int(np.nanargmax(stats.cider_to_refs))]
    if shares is not None:
        # the aggregate counts, per layer, the captions whose answer entered the shares
        metrics["captions_in_shares_percent"] = 100.0 * sum(shares.n_captions) / max(n_rows, 1)
        metrics["layer_colour_stops_dominating"] = layer_colour_stops_dominating(shares)
    if labels is not None:
        for flag, count in labels.status_flags.items():
            metrics[f"answers_{flag}"] = count
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


def layer_rows(stats: LayerStats, shares: cat.ShareMatrix | None, naming: LayerNaming | None = None) -> list[dict]:
    """One row per layer: the numbers of layer_stats.csv and the page's per-layer table (with
    ``naming``: the model's own label of the layer and its relative depth)."""
    top = main_category_by_layer(shares)
    rows = []
    for j, layer in enumerate(stats.layers):
        row: dict[str, object] = {"layer": layer}
        if naming is not None:
            row["layer_label"] = naming.label(layer)
            row["relative_depth"] = round(naming.depth(layer), 4)
        row.update({
            "captions": stats.n_captions[j],
            "unique_captions": stats.unique_captions[j],
            "entropy_mean": stats.entropy["mean"][j],
            "entropy_std": stats.entropy["std"][j],
            "entropy_median": stats.entropy["median"][j],
            "f1_to_final": stats.f1_to_final[j],
            "bleu4_to_final": stats.bleu4_to_final[j],
        })
        if stats.cider_to_refs is not None:
            row["bleu4_to_refs"] = stats.bleu4_to_refs[j]
            row["cider_d_to_refs"] = stats.cider_to_refs[j]
        if shares is not None:
            row["labelled_captions"] = shares.n_captions[j]
            row["top_category"] = (top[j] if top else None) or ""
        rows.append(row)
    return rows


def status_text(labels: LabelView) -> str:
    return ", ".join(f"{md_text(flag)}: {count:,}" for flag, count in labels.status_flags.most_common()) or "–"


def main_category_runs(shares: cat.ShareMatrix) -> list[tuple[int, str, int]]:
    """(first layer, category, last layer) for each run of layers with the same main category."""
    runs: list[tuple[int, str, int]] = []
    for layer, top in zip(shares.layers, main_category_by_layer(shares)):
        if top is None:
            continue
        if runs and runs[-1][1] == top:
            runs[-1] = (runs[-1][0], top, layer)
        else:
            runs.append((layer, top, layer))
    return runs


def summary_markdown(metrics: dict[str, float], stats: LayerStats, shares: cat.ShareMatrix | None,
                     labels: LabelView | None, precision: CaptionPrecision, warnings: list[str],
                     failed_shards: Sequence[str] = (), weights_note: str | None = None) -> str:
    """``failed_shards``: Markdown lines on the shards the run left out, shown first."""
    def value(key, digits=2, suffix=""):
        return metric_text(metrics, key, digits, suffix)

    lines = [
        "# latent-verbalizer report",
        "",
        *failed_shards,
        f"{value('images', 0)} images x {value('layers', 0)} layers = {value('captions', 0)} captions "
        f"({value('unique_captions', 0)} distinct).",
        "",
        f"{'**Method deviation:** ' if precision.deviation else ''}{md_text(precision.text[0].upper() + precision.text[1:])}.",
        "",
        *([f"**{md_text(weights_note)}**", ""] if weights_note else []),
        "| metric | value |",
        "| --- | --- |",
        f"| mean caption entropy, first layer (bits/token) | {value('entropy_first_layer_mean')} |",
        f"| mean caption entropy, last layer (bits/token) | {value('entropy_last_layer_mean')} |",
        f"| median layer from which a caption stays close to the final one (F1 >= {stats.close_threshold:g}) | "
        f"{value('median_layer_caption_settles', 1)} |",
        f"| captions cut at the length limit | {value('captions_stopped_by_length_percent', 1)}% |",
    ]
    if "captions_in_shares_percent" in metrics:
        lines.append(f"| captions whose LLM answer entered the category shares | "
                     f"{value('captions_in_shares_percent', 1)}% |")
    if labels is not None and labels.status_flags:
        lines.append(f"| LLM answers by status flag (distinct captions) | {status_text(labels)} |")
    if "layer_colour_stops_dominating" in metrics:
        lines.append(f"| layer where colour stops being the main category | {value('layer_colour_stops_dominating', 0)} |")
    if "cider_d_last_layer" in metrics:
        lines.append(f"| CIDEr-D / BLEU-4 vs references, last layer | {value('cider_d_last_layer', 3)} / "
                     f"{value('bleu4_last_layer', 3)} |")
        lines.append(f"| layer with the best CIDEr-D | {value('best_cider_d_layer', 0)} |")
    runs = main_category_runs(shares) if shares is not None and shares.categories else []
    if runs:
        lines += ["", "Main category (besides UNKNOWN) by layer: " + "; ".join(
            f"{first}-{last} {md_text(top)}" if first != last else f"{first} {md_text(top)}"
            for first, top, last in runs) + "."]
    if warnings:
        lines += [""] + [f"- warning: {md_text(w)}" for w in warnings]
    lines += ["", "Full report: report.html (plots as PNG/SVG under plots/)."]
    return "\n".join(lines) + "\n"
