"""The report page's sections (charts, tables, provenance), assembled into the one-file page."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from html import escape

from ..assets.loader import page_js
from ..compare.sections import Comparison, compare_script, compare_sections
from ..inputs.shard_images import ShardImages
from ..metrics import category_shares as cat
from ..metrics.run_view import RunView
from ..page.browser_sample import sample_note
from ..page.html import SINGLE_BROWSER, PageScript, page, svg_img, table
from ..page.provenance_html import find_skipped, provenance_html
from .browser_data import browser_data
from .grounding_page import RunGrounding, page_parts
from .image_table import IMAGE_TABLE
from .summary import layer_rows, metric_text, status_text


@dataclass
class ReportContent:
    """Everything the page shows, computed by ``report.build_report``: the run's view and what the page adds."""

    title: str
    run: RunView                        # the run's tables, grid, numbers, labels, shares, precision, naming
    chart: cat.ShareMatrix | None       # small categories grouped (the figure); the run's shares: every category
    colours: dict[str, str]
    svgs: dict[str, bytes]              # figure name -> SVG
    metrics: dict[str, float]
    images: ShardImages | None
    browser: list[int]                  # the images the browser embeds (indices into the run's grid)
    warnings: list[str]                 # the page's: failed shards, the run's tables, images, the comparison
    report_params: list[tuple[str, str]]
    comparison: Comparison | None = None   # a second run to compare this one with (its sections follow the browser)
    weights_note: str | None = None        # set when the captions come from random weights (random_weights_note.py)
    grounding: RunGrounding | None = None  # the captions' per-patch maps (issue #21), when the run computed them


def headline_cards(content: ReportContent) -> list[tuple[str, str]]:
    metrics = content.metrics

    def value(key, digits=2, suffix=""):
        return metric_text(metrics, key, digits, suffix)

    cards = [
        ("images", value("images", 0)), ("layers", value("layers", 0)), ("captions", value("captions", 0)),
        ("distinct captions", value("unique_captions", 0)),
        ("captions in the category shares", value("captions_in_shares_percent", 1, "%")),
        ("entropy first / last layer", f"{value('entropy_first_layer_mean')} / {value('entropy_last_layer_mean')}"),
        ("colour stops dominating at layer", value("layer_colour_stops_dominating", 0)),
        ("median layer a caption settles", value("median_layer_caption_settles", 1)),
    ]
    if "cider_d_last_layer" in metrics:
        cards.append(("CIDEr-D last layer vs refs", value("cider_d_last_layer", 3)))
    return cards


def categories_section(content: ReportContent) -> tuple[str, str, str]:
    shares = content.run.shares
    heading = "Category share per layer"
    if shares is None:
        return ("categories", heading,
                '<p class="note">No labels given: run the categorize step and pass --labels and --aggregate.</p>')
    if not shares.categories:
        return ("categories", heading, '<p class="note">No caption has a valid labelled part: nothing to chart.</p>')
    inner = ('<p class="note">Mean share of caption parts per category, per layer (from the categorize step\'s '
             'aggregate table). Areas are stacked from the bottom in the order the legend lists them from the '
             'bottom up; categories that peak earlier lie lower.</p>'
             + svg_img(content.svgs["category_share"], "category share per layer", "chart-categories"))
    rows = []
    for i, layer in enumerate(shares.layers):
        rows.append([layer, shares.n_captions[i]] + [None if math.isnan(v) else float(v) for v in shares.values[i]])

    def cell_attrs(r, c):
        if c < 2:
            return ""
        return (f' data-layer="{shares.layers[r]}" data-category="{escape(shares.categories[c - 2])}"'
                f' data-value="{"" if rows[r][c] is None else repr(rows[r][c])}"')

    inner += ("<details><summary>the table (every category, percent)</summary>"
              + table(["layer", "labelled captions"] + shares.categories, rows, "category-table", 0, cell_attrs)
              + "</details>")
    return "categories", heading, inner


def entropy_section(content: ReportContent) -> tuple[str, str, str]:
    return ("entropy", "Caption entropy per layer",
            '<p class="note">Mean over the generated tokens of the entropy of the full next-token '
            'distribution (bits), per caption; the bands show the spread over images.</p>'
            + svg_img(content.svgs["entropy"], "caption entropy per layer", "chart-entropy"))


def distance_section(content: ReportContent) -> tuple[str, str, str]:
    with_refs = content.run.stats.cider_to_refs is not None
    note = ('<p class="note">How far each layer\'s caption is from the last layer\'s: token F1 (mean over '
            'images) and corpus BLEU-4' + (', and against the reference captions carried by the shards: '
                                            'corpus BLEU-4 and CIDEr-D' if with_refs else
                                            ' (no reference captions in the inputs: pass --images with shards carrying '
                                            'json captions for BLEU/CIDEr against them)') + '.</p>')
    rows = layer_rows(content.run.stats, content.run.shares, content.run.naming)
    return ("distance", "Distance to the final caption",
            note + svg_img(content.svgs["distance_to_final"], "distance to the final caption", "chart-distance")
            + svg_img(content.svgs["stays_close"], "first layer a caption stays close", "chart-settle")
            + "<details open><summary>per-layer numbers</summary>"
            + table(list(rows[0]), [list(r.values()) for r in rows], "layer-table", 0) + "</details>")


def run_section(content: ReportContent) -> tuple[str, str, str]:
    grid, inputs, images = content.run.grid, content.run.inputs, content.images
    counts = [
        ("images", f"{len(grid.image_keys):,}"), ("layers", ", ".join(map(str, grid.layers))),
        ("caption rows", f"{int((grid.rows >= 0).sum()):,}"),
        ("stop reasons", ", ".join(f"{k}: {v:,}" for k, v in Counter(grid.stops).most_common())),
        ("caption precision", content.run.precision.text),
        ("layer naming", content.run.naming.source_text()),
    ]
    if inputs.categorized is not None:
        counts.append(("labels rows (distinct captions)", f"{inputs.categorized.labels.num_rows:,}"))
        counts.append(("label status flags (distinct captions)", status_text(content.run.labels)))
    if images is not None:
        counts.append(("thumbnails", f"{len(images.thumbnails):,}"))
        counts.append(("images with reference captions", f"{len(images.references):,}"))
    return ("run", "How this run was made",
            provenance_html(inputs.provenance, inputs.sources, counts, content.report_params))


def subtitle(content: ReportContent) -> str:
    grid, inputs = content.run.grid, content.run.inputs
    text = f"{len(grid.image_keys):,} images x {len(grid.layers)} layers"
    first_meta = (inputs.provenance.get("captions") or [{}])[0]
    params = first_meta.get("parameters") or {}
    model = first_meta.get("model") or params.get("model")
    if model:
        pretrained = first_meta.get("pretrained") or params.get("pretrained")
        text += f" · {model}" + (f" / {pretrained}" if pretrained else "")
    skipped = sum(len(find_skipped(m)) for metas in inputs.provenance.values() for m in metas)
    if skipped:
        text += f" · {skipped} sample{'s' if skipped != 1 else ''} skipped (see the end)"
    return text


def browser_section(content: ReportContent) -> tuple[str, str, str]:
    note = sample_note(len(content.browser), len(content.run.grid.image_keys), f"{IMAGE_TABLE} beside this page")
    return "browser", "Images", (f'<p class="note" id="browser-sample">{escape(note)}</p>' if note else "") + SINGLE_BROWSER


def report_html(content: ReportContent) -> str:
    sections = [categories_section(content), entropy_section(content), distance_section(content),
                browser_section(content)]
    chart, shares = content.chart, content.run.shares
    # the browser lists the table's categories, not the chart's "other" group
    browser_categories = [c for c in content.colours if chart is None or c not in chart.categories
                          or c in shares.categories]
    data = browser_data(content.run.grid, content.run.stats, content.run.labels, browser_categories, content.colours,
                        content.images, content.run.naming, content.browser)
    scripts = [PageScript("report-data", data, page_js())]
    grounding_sections, grounding_script = page_parts(content.grounding, content.run.grid, content.run.naming,
                                                      content.comparison, content.browser)
    sections[3:3] = grounding_sections  # before the image browser
    scripts[:0] = [grounding_script] if grounding_script else []  # defined before the browsers draw
    notes = [(content.run.precision.text, content.run.precision.deviation), (content.weights_note, True)]
    comparison = content.comparison
    if comparison is not None:
        sections += compare_sections(comparison)
        scripts.append(compare_script(comparison))
        other = comparison.b
        notes.append((f"compared with {other.name} ({other.source}): {other.precision.text}",
                      other.precision.deviation))
    sections.append(run_section(content))
    return page(title=content.title, subtitle=subtitle(content), headline=headline_cards(content), sections=sections,
                warnings=content.warnings, scripts=scripts, method_notes=notes)
