"""Two runs in one report: ``build_compare_report`` (``lverb report --compare RUN_A RUN_B``) and
the comparison a single run's report adds when given a second run (``build_report(compare_with=...)``).

Files written under ``out_uri`` by ``build_compare_report``::

    report.html                 the page (no network needed to open it)
    summary.md, metrics.json    a short summary and headline numbers
    compare_shares.csv          both runs' category shares on the common depth grid, and B minus A
    plots/{compare_category_share,compare_share_difference,compare_entropy}.{png,svg}
"""

from __future__ import annotations

import datetime
import logging
import math
import time

import numpy as np

from ...common import storage
from ...common.version import __version__
from ..inputs.shard_images import ShardImages, read_shard_images
from ..metrics import category_shares as cat
from ..metrics.depth_shares import INTERPOLATION_NOTE, compare_shares, grouped_for_charts
from ..metrics.run_view import RunView, load_run
from ..page.browser_sample import BROWSER_IMAGES, browser_sample
from ..page.html import page
from ..page.markdown_text import md_text
from ..page.outputs import ReportResult, write_csv, write_page_files
from ..single import plots
from ..single.grounding_page import compare_grounding_scripts
from ..single.summary import metric_text
from . import plots as compare_plots
from .sections import (
    Comparison,
    compare_script,
    compare_sections,
    image_counts_text,
    method_notes,
    provenance_sections,
)

log = logging.getLogger("lverb.report")

COMPARE_SHARE_COLUMNS = ["relative_depth", "category", "layer_a", "share_a_percent", "layer_b", "share_b_percent",
                         "b_minus_a_points"]


def build_compare_report(run_a: str, run_b: str, out_uri: str, images_pattern: str | None = None, *,
                         names: tuple[str, str] | None = None, min_share_percent: float = 5.0,
                         thumbnail_px: int = 96, max_thumbnails: int | None = None,
                         title: str = "Two runs compared: what each layer sees",
                         browser_images: int | None = BROWSER_IMAGES) -> ReportResult:
    """Compare two finished runs, given by their storage prefixes (folder or ``s3://``; a local run's
    ``runs/<timestamp>`` folder also works); write the page and its files under ``out_uri``.

    ``names``: display names of A and B (default: their models' names). ``images_pattern``: webdataset
    shards holding the images (thumbnails of the shared images). ``min_share_percent``: categories below
    it in every layer of both runs are one "other" area in the charts (the tables keep them all).
    ``browser_images``: the most shared images the browser embeds (None: all); above it a fixed sample.
    """
    started = time.perf_counter()
    name_a, name_b = names or (None, None)
    a, b = load_run(run_a, "RUN_A", name_a), load_run(run_b, "RUN_B", name_b)
    c = compare_runs(a, b, min_share_percent, browser_images)
    if images_pattern:
        c.images = read_shard_images(images_pattern, set(c.browser_keys), thumbnail_px, max_thumbnails)
        c.warnings += thumbnail_warnings(c, images_pattern, max_thumbnails)
    files = write_compare_files(out_uri, c)
    metrics = compare_metrics(c)
    markdown = compare_markdown(c, metrics, standalone=True)
    report_params = compare_parameters(min_share_percent)
    html = page(title=title, subtitle=f"A: {a.name} · B: {b.name} · {image_counts_text(c)}",
                headline=compare_cards(c, metrics), sections=compare_sections(c) + provenance_sections(c, report_params),
                warnings=c.warnings, scripts=compare_grounding_scripts(c) + [compare_script(c)],
                method_notes=method_notes(c))
    files.update(write_page_files(out_uri, markdown, metrics, html))
    log.info("compare report: %s vs %s, %d shared images -> %s in %.1fs", a.name, b.name, len(c.shared_keys),
             files["report.html"], time.perf_counter() - started)
    return ReportResult(metrics, markdown, html, files)


def compare_runs(a: RunView, b: RunView, min_share_percent: float = 5.0,
                 browser_images: int | None = BROWSER_IMAGES) -> Comparison:
    """What the comparison shows: shares on the common depth grid, chart categories, colours, shared images
    (the browser: at most ``browser_images`` of them, a fixed sample: ``page/browser_sample.py``)."""
    for run in (a, b):
        if run.shares is None:
            raise ValueError(f"{run.role} {run.source}: no labels; a comparison needs both runs' categorize output")
    warnings = [f"{run.name}: {w}" for run in (a, b) for w in run.warnings]
    if a.name == b.name:  # two runs of one model: tell them apart on the page
        a.name, b.name = f"{a.name} (A)", f"{b.name} (B)"
    depth = compare_shares(a.shares, a.depths, b.shares, b.depths)
    chart_categories, _, _ = grouped_for_charts(a.shares, b.shares, depth.categories, min_share_percent)
    keys_b = set(b.grid.image_keys)
    keys_a = set(a.grid.image_keys)
    shared = [k for k in a.grid.image_keys if k in keys_b]
    c = Comparison(a=a, b=b, depth=depth, chart_categories=chart_categories, colours=colours_of(a, b, depth.categories,
                   chart_categories), shared_keys=shared, only_a=[k for k in a.grid.image_keys if k not in keys_b],
                   only_b=[k for k in b.grid.image_keys if k not in keys_a], warnings=warnings)
    c.browser_keys = [shared[i] for i in browser_sample(shared, browser_images)]
    if not shared:
        c.warnings.append(f"the runs share no image (no image key in both): the image browser is empty; "
                          f"{image_counts_text(c)}")
    rendered = {name: plots.render(figure) for name, figure in compare_figures(c, min_share_percent).items()}
    c.pngs = {name: png for name, (png, _) in rendered.items()}
    c.svgs = {name: svg for name, (_, svg) in rendered.items()}
    return c


def colours_of(a: RunView, b: RunView, categories: list[str], chart_categories: list[str]) -> dict[str, str]:
    """One colour per category for both runs: the charts' categories (heaviest first), then any other
    category a caption part of either run is coloured with, then the charts' "other" group."""
    parts = a.labels.categories | b.labels.categories
    weight = {}
    for run in (a, b):
        for j, category in enumerate(run.shares.categories):
            weight[category] = weight.get(category, 0.0) + float(np.nansum(run.shares.values[:, j]))
    colours = cat.category_colours(categories + sorted(parts - set(categories)), weight)
    colours.update({c: v for c, v in cat.category_colours(chart_categories).items() if c.startswith(cat.OTHER)})
    return colours


def compare_figures(c: Comparison, min_share_percent: float) -> dict:
    categories, values_a, values_b = grouped_for_charts(c.a.shares, c.b.shares, c.depth.categories, min_share_percent)
    return {
        "compare_category_share": compare_plots.shares_side_by_side(c.a, c.b, categories, values_a, values_b,
                                                                    c.colours),
        "compare_share_difference": compare_plots.share_difference(c.depth, categories, c.a.name, c.b.name),
        "compare_entropy": compare_plots.entropy_overlay(c.a, c.b),
    }


def write_compare_files(out_uri: str, c: Comparison) -> dict[str, str]:
    """The comparison's figures (PNG and SVG under plots/) and compare_shares.csv."""
    files = {}
    for name, svg in c.svgs.items():
        for ext, data in (("png", c.pngs[name]), ("svg", svg)):
            uri = storage.join(out_uri, "plots", f"{name}.{ext}")
            storage.write_bytes(uri, data)
            files[f"plots/{name}.{ext}"] = uri
    files["compare_shares.csv"] = write_csv(storage.join(out_uri, "compare_shares.csv"), COMPARE_SHARE_COLUMNS,
                                            c.depth.rows())
    return files


def thumbnail_warnings(c: Comparison, images_pattern: str | None, max_thumbnails: int | None) -> list[str]:
    images: ShardImages = c.images
    missing = [k for k in c.browser_keys if k not in images.thumbnails and k not in dict(images.unreadable)]
    out = []
    if images.unreadable:
        out.append(f"{len(images.unreadable)} images could not be read for thumbnails: "
                   + ", ".join(k for k, _ in images.unreadable[:10]))
    if missing and max_thumbnails is None:
        out.append(f"{len(missing)} shared images were not found in the shards {images_pattern}")
    return out


def compare_metrics(c: Comparison) -> dict[str, float]:
    """Headline numbers of the comparison (all finite floats; keys prefixed ``compare_``)."""
    a, b = c.a, c.b
    metrics: dict[str, float | None] = {
        "compare_images_shared": len(c.shared_keys),
        "compare_images_only_a": len(c.only_a),
        "compare_images_only_b": len(c.only_b),
        "compare_layers_a": len(a.grid.layers),
        "compare_layers_b": len(b.grid.layers),
        "compare_entropy_last_layer_mean_a": a.stats.entropy["mean"][-1],
        "compare_entropy_last_layer_mean_b": b.stats.entropy["mean"][-1],
    }
    largest = c.depth.max_abs_difference()
    if largest is not None:
        metrics["compare_max_abs_share_difference_points"] = abs(largest[0])
        metrics["compare_max_abs_share_difference_depth"] = largest[2]
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


def compare_cards(c: Comparison, metrics: dict[str, float]) -> list[tuple[str, str]]:
    largest = c.depth.max_abs_difference()
    return [
        ("shared images", metric_text(metrics, "compare_images_shared", 0)),
        ("only in A / only in B", f"{len(c.only_a):,} / {len(c.only_b):,}"),
        ("layers A / B", f"{len(c.a.grid.layers)} / {len(c.b.grid.layers)}"),
        ("entropy last layer A / B", f"{metric_text(metrics, 'compare_entropy_last_layer_mean_a')} / "
                                     f"{metric_text(metrics, 'compare_entropy_last_layer_mean_b')}"),
        ("largest share difference (B - A)",
         f"{largest[0]:+.1f} pts, {largest[1]} at depth {largest[2]:.2f}" if largest else "–"),
    ]


def compare_markdown(c: Comparison, metrics: dict[str, float], standalone: bool) -> str:
    a, b = c.a, c.b
    largest = c.depth.max_abs_difference()
    lines = ["# latent-verbalizer: two runs compared" if standalone else "## Compared with another run", ""]
    for tag, run in (("A", a), ("B", b)):
        made_by = run.naming.family + (", " + run.naming.pretrained if run.naming.pretrained else "")
        lines.append(f"- {tag}: {md_text(run.name)} ({md_text(made_by)}), "
                     f"{len(run.grid.image_keys):,} images x {len(run.grid.layers)} of {run.naming.n_layers} blocks; "
                     f"{'**method deviation:** ' if run.precision.deviation else ''}{md_text(run.precision.text)}; "
                     f"{md_text(run.source)}")
    lines += ["", f"{image_counts_text(c)}.", ""]
    if largest:
        lines.append(f"Largest category share difference (B minus A): {largest[0]:+.1f} percentage points for "
                     f"{md_text(largest[1])} at relative depth {largest[2]:.2f}.")
    lines += [f"Mean caption entropy at the last layer: A {metric_text(metrics, 'compare_entropy_last_layer_mean_a')}, "
              f"B {metric_text(metrics, 'compare_entropy_last_layer_mean_b')} bits per token.", "",
              INTERPOLATION_NOTE]
    if standalone and c.warnings:
        lines += [""] + [f"- warning: {md_text(w)}" for w in c.warnings]
    if standalone:
        lines += ["", "Full report: report.html (plots as PNG/SVG under plots/, shares in compare_shares.csv)."]
    return "\n".join(lines) + "\n"


def compare_parameters(min_share_percent: float) -> list[tuple[str, str]]:
    return [
        ("package", f"latent-verbalizer {__version__}"),
        ("made", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("category shares from", "each run's categorize aggregate table; colours shared by both runs"),
        ("charts group categories below", f"{min_share_percent:g}% in every layer of both runs"),
        ("depth grid", INTERPOLATION_NOTE),
    ]
