"""Tables -> report: one self-contained HTML page, PNG/SVG plots, a Markdown summary, metrics.

``build_report`` is what the CLI (``lverb report``) and the KFP component call.
Files written under ``out_uri`` (a folder or an ``s3://``/``minio://`` prefix)::

    report.html             the page (no network needed to open it)
    summary.md              a short summary (KFP Output[Markdown])
    metrics.json            headline numbers (KFP Output[Metrics])
    category_share.csv      the per-layer category table the chart is drawn from
    layer_stats.csv         per-layer entropy / distance numbers
    plots/{category_share,entropy,distance_to_final,stays_close}.{png,svg}

Given a second run (``compare_with``), the page also compares this run (A) with it (B), and the
comparison's files are written too (``compare_report``: compare_shares.csv, plots/compare_*).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Collection

import numpy as np

from ...common import storage
from ...common.contracts import FailedShard
from ...common.tables import provenance
from ...common.version import __version__
from ..compare import report as compare
from ..inputs.layer_naming import LayerNaming
from ..inputs.random_weights_note import random_weights_note
from ..inputs.shard_images import ShardImages, read_shard_images
from ..inputs.tables import ReportInputs, load_inputs
from ..metrics import category_shares as cat
from ..metrics.data_warnings import image_warnings
from ..metrics.labels import LabelView
from ..metrics.layer_stats import CaptionGrid, LayerStats, compute_layer_stats
from ..metrics.run_view import RunView, load_run, run_view_of
from ..page.browser_sample import BROWSER_IMAGES, browser_sample
from ..page.outputs import (
    ReportResult,
    failed_shard_warnings,
    failed_shards_markdown,
    write_csv,
    write_page_files,
)
from . import plots
from .grounding_page import grounding_markdown, grounding_metrics, run_grounding, write_grounding_files
from .image_table import write_image_table
from .sections import ReportContent, report_html
from .summary import headline_metrics, layer_rows, summary_markdown

log = logging.getLogger("lverb.report")

SHARE_COLUMNS = ["layer", "category", "share_percent", "n_captions"]


def build_report(captions_uris: list[str] | str, labels_uri: str | None, aggregate_uri: str | None,
                 out_uri: str, images_pattern: str | None = None, *, close_f1: float = 0.5,
                 min_share_percent: float = 5.0, thumbnail_px: int = 96, max_thumbnails: int | None = None,
                 title: str = "What each layer sees", compare_with: str | None = None,
                 compare_role: str = "--compare-with", names: tuple[str | None, str | None] | None = None,
                 failed_shards: list[FailedShard] | None = None,
                 browser_images: int | None = BROWSER_IMAGES) -> ReportResult:
    """Read the tables, write the report under ``out_uri``, return metrics, Markdown and HTML.

    ``labels_uri`` and ``aggregate_uri``: the categorize step's two tables (both or neither);
    the category shares and the label-to-category map come from the aggregate and its metadata.
    ``close_f1``: token F1 to the last layer's caption above which a caption counts as close.
    ``min_share_percent``: categories never reaching this share in any layer are drawn as one
    "other" area (the table keeps them all).
    ``compare_with``: a second finished run's storage prefix (folder or s3://): the page also compares
    this run (A) with it (B); ``compare_role`` names it in errors (the pipeline: its parameter's name).
    ``names``: display names of this run and the other (default: their models' names).
    ``failed_shards``: the shards the pipeline left out (bad input), listed first on the page and in
    the summary, counted in the ``failed_shards`` metric; their shards are not read for thumbnails.
    ``browser_images``: the most images the page's browser embeds (None: all); above it, a fixed sample
    (``page/browser_sample.py``), said so on the page; every image is in image_captions.parquet.
    """
    started = time.perf_counter()
    inputs = load_inputs(captions_uris, labels_uri, aggregate_uri)
    grid = CaptionGrid.from_table(inputs.captions)
    failed = list(failed_shards or [])
    shown = browser_sample(grid.image_keys, browser_images)
    shown_keys = [grid.image_keys[i] for i in shown]
    images = read_images(images_pattern, grid, inputs, thumbnail_px, max_thumbnails, {f.shard for f in failed},
                         set(shown_keys))
    stats = compute_layer_stats(grid, images.references if images else None, close_f1)
    run = run_view_of(inputs, "this run", "this run", (names or (None, None))[0], stats=stats, grid=grid,
                      errors_name="captions")
    labels = run.labels if inputs.categorized else None
    chart = cat.group_small(run.shares, min_share_percent) if run.shares else None
    colours = category_colours(run.shares, chart, run.labels)
    weights_note = random_weights_note(inputs.provenance["captions"])
    warnings = run.warnings + image_warnings(grid, images, images_pattern, max_thumbnails, shown_keys)
    metrics = headline_metrics(grid, stats, labels, run.shares)
    metrics["browser_images"] = float(len(shown))
    if failed_shards is not None:  # the pipeline: 0 says every shard made it
        metrics["failed_shards"] = float(len(failed))
    grounding = run_grounding(inputs, grid, run.naming)  # None: the captions carry no maps (issue #21)
    metrics.update(grounding_metrics(grounding))
    comparison = None
    if compare_with:
        comparison = compare_this_run(run, images, compare_with, compare_role, names, min_share_percent,
                                      browser_images)
        warnings += comparison.warnings

    svgs, files = write_plots(out_uri, stats, chart, colours, run.naming)
    files.update(write_tables(out_uri, stats, run.shares, run.naming))
    files.update(write_grounding_files(out_uri, grounding, run.naming))
    files.update(write_image_table(out_uri, grid, stats, run.naming, shown,
                                   provenance(captions=inputs.sources["captions"], browser_images=browser_images)))
    markdown = summary_markdown(metrics, stats, run.shares, labels, run.precision, warnings,
                                failed_shards_markdown(failed), weights_note) + grounding_markdown(grounding)
    warnings = failed_shard_warnings(failed) + warnings  # at the top of the page
    if comparison is not None:
        files.update(compare.write_compare_files(out_uri, comparison))
        metrics.update(compare.compare_metrics(comparison))
        markdown += "\n" + compare.compare_markdown(comparison, metrics, standalone=False)
    html = report_html(ReportContent(
        title=title, run=run, chart=chart, colours=colours, svgs=svgs, metrics=metrics, images=images, browser=shown,
        warnings=warnings, report_params=report_parameters(close_f1, min_share_percent), comparison=comparison,
        weights_note=weights_note, grounding=grounding,
    ))
    files.update(write_page_files(out_uri, markdown, metrics, html))
    log.info("report: %d images x %d layers -> %s (%.1f MB HTML) in %.1fs", len(grid.image_keys), len(grid.layers),
             files["report.html"], len(html.encode()) / 1e6, time.perf_counter() - started)
    return ReportResult(metrics, markdown, html, files)


# ------------------------------------------------------------------ steps

def compare_this_run(run: RunView, images: ShardImages | None, other: str, role: str,
                     names: tuple[str | None, str | None] | None, min_share_percent: float,
                     browser_images: int | None = BROWSER_IMAGES):
    """This run (A, the tables just read) against a second finished run (B, from its storage prefix)."""
    if run.shares is None:
        raise ValueError(f"{role} {other}: a comparison needs this run's labels too; pass --labels and --aggregate")
    this = dataclasses.replace(run, warnings=[])  # this run's own warnings are on its page already
    comparison = compare.compare_runs(this, load_run(other, role, (names or (None, None))[1]), min_share_percent,
                                      browser_images)
    comparison.images = images  # this run's thumbnails: the shared images are among them
    return comparison


def read_images(pattern: str | None, grid: CaptionGrid, inputs: ReportInputs, thumbnail_px: int,
                max_thumbnails: int | None, skip_shards: Collection[str] = frozenset(),
                thumbnail_keys: set[str] | None = None) -> ShardImages | None:
    """Reference captions of the captioned images and thumbnails of ``thumbnail_keys`` (default: all);
    None: no shards given."""
    if not pattern:
        return None
    images = read_shard_images(pattern, set(grid.image_keys), thumbnail_px, max_thumbnails, skip_shards,
                               thumbnail_keys)
    inputs.sources["images"] = images.shards
    return images


def category_colours(shares: cat.ShareMatrix | None, chart: cat.ShareMatrix | None,
                     labels: LabelView) -> dict[str, str]:
    """Chart categories first (so the page and the figure agree), then any other category a
    caption part is coloured with, then the chart's "other" group."""
    chart_categories = list(shares.categories) if shares else []
    part_categories = labels.categories
    weight = {c: float(np.nansum(shares.values[:, j])) for j, c in enumerate(chart_categories)} if shares else {}
    colours = cat.category_colours(chart_categories + sorted(part_categories - set(chart_categories)), weight)
    if chart is not None:
        colours.update({c: v for c, v in cat.category_colours(chart.categories).items() if c.startswith(cat.OTHER)})
    return colours


def report_parameters(close_f1: float, min_share_percent: float) -> list[tuple[str, str]]:
    return [
        ("package", f"latent-verbalizer {__version__}"),
        ("made", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("category shares and map from", "the categorize step's aggregate table and its metadata"),
        ("close to final", f"token F1 >= {close_f1:g}"),
        ("chart groups categories below", f"{min_share_percent:g}% in every layer"),
        ("text metrics", "BLEU-4 and CIDEr-D as in coco-caption, but tokenised in Python "
                         "(lower-case, punctuation dropped), not with the Java PTB tokenizer"),
    ]


def write_plots(out_uri: str, stats: LayerStats, chart: cat.ShareMatrix | None, colours: dict[str, str],
                naming: LayerNaming | None = None) -> tuple[dict[str, bytes], dict[str, str]]:
    """Every figure as PNG and SVG under plots/; returns the SVGs (for the page) and the files."""
    figures = {
        "entropy": plots.entropy(stats, naming),
        "distance_to_final": plots.distance_to_final(stats, naming),
        "stays_close": plots.stays_close(stats, naming),
    }
    if chart is not None:
        figures["category_share"] = plots.category_share(chart, colours, naming)
    svgs: dict[str, bytes] = {}
    files: dict[str, str] = {}
    for name, figure in figures.items():
        png, svg = plots.render(figure)
        svgs[name] = svg
        for ext, data in (("png", png), ("svg", svg)):
            uri = storage.join(out_uri, "plots", f"{name}.{ext}")
            storage.write_bytes(uri, data)
            files[f"plots/{name}.{ext}"] = uri
    return svgs, files


def write_tables(out_uri: str, stats: LayerStats, shares: cat.ShareMatrix | None,
                 naming: LayerNaming | None = None) -> dict[str, str]:
    rows = layer_rows(stats, shares, naming)
    return {
        "category_share.csv": write_csv(storage.join(out_uri, "category_share.csv"), SHARE_COLUMNS,
                                        shares.rows() if shares else []),
        "layer_stats.csv": write_csv(storage.join(out_uri, "layer_stats.csv"), list(rows[0]), rows),
    }
