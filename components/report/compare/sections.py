"""The comparison's part of a page: both runs named, category shares side by side and their
difference on relative depth, entropy overlaid, and a browser of the images both runs captioned.
Used by the compare page (``lverb report --compare``) and by a single run's page given a second run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

from ..assets.loader import asset_text
from ..inputs.shard_images import ShardImages
from ..metrics.depth_shares import INTERPOLATION_NOTE, DepthShares
from ..metrics.run_view import RunView
from ..page.browser_captions import intern_captions
from ..page.browser_sample import sample_note
from ..page.html import PageScript, browser_controls, svg_img, table
from ..page.provenance_html import provenance_html

MAX_KEYS_LISTED = 50


@dataclass
class Comparison:
    """Everything the comparison shows, computed by ``compare_report.compare_runs``."""

    a: RunView
    b: RunView
    depth: DepthShares
    chart_categories: list[str]        # the side-by-side charts' categories (small ones grouped)
    colours: dict[str, str]            # every category a chart or a caption part is coloured with
    shared_keys: list[str]             # images both runs captioned, in run A's order
    only_a: list[str]
    only_b: list[str]
    images: ShardImages | None = None
    svgs: dict[str, bytes] = field(default_factory=dict)   # figure name -> SVG
    pngs: dict[str, bytes] = field(default_factory=dict)   # figure name -> PNG
    warnings: list[str] = field(default_factory=list)
    browser_keys: list[str] = field(default_factory=list)  # the shared images the browser embeds (a sample)


def runs_table(c: Comparison) -> str:
    facts_a, facts_b = c.a.header_facts(), c.b.header_facts()
    rows = [[key, va, vb] for (key, va), (_, vb) in zip(facts_a, facts_b)]
    return table(["", f"A: {c.a.name}", f"B: {c.b.name}"], rows, "compare-runs", text_cols=3)


def image_counts_text(c: Comparison) -> str:
    return (f"{len(c.shared_keys):,} images both runs captioned; {len(c.only_a):,} only in A ({c.a.name}), "
            f"{len(c.only_b):,} only in B ({c.b.name})")


def _keys_list(keys: list[str], which: str) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:MAX_KEYS_LISTED]) + (f" and {len(keys) - MAX_KEYS_LISTED:,} more"
                                                  if len(keys) > MAX_KEYS_LISTED else "")
    return (f'<details><summary>{len(keys):,} images only in {escape(which)} (not in the image browser)</summary>'
            f'<p class="note only-keys">{escape(shown)}</p></details>')


def header_section(c: Comparison, sid: str = "compare-runs-section") -> tuple[str, str, str]:
    inner = (f'<p class="note" id="compare-image-counts">{escape(image_counts_text(c))}.</p>'
             + runs_table(c) + _keys_list(c.only_a, f"A ({c.a.name})") + _keys_list(c.only_b, f"B ({c.b.name})"))
    return sid, "The two runs", inner


def shares_section(c: Comparison) -> tuple[str, str, str]:
    inner = ('<p class="note">Mean share of caption parts per category (each run\'s categorize aggregate), per '
             'layer, drawn at each layer\'s relative depth so encoders of different depth line up. Categories '
             'below the chart threshold in every layer of both runs are one "other" area.</p>'
             + svg_img(c.svgs["compare_category_share"], "category share per layer, both runs",
                       "chart-compare-categories"))
    return "compare-categories", "Category share per layer, both runs", inner


def difference_section(c: Comparison) -> tuple[str, str, str]:
    depth = c.depth
    diff = depth.difference
    rows = []
    for i, d in enumerate(depth.depths):
        rows.append([f"{d:.4f}", _layer_text(c.a, depth.a_layer[i]), _layer_text(c.b, depth.b_layer[i])]
                    + [None if math.isnan(v) else float(v) for v in diff[i]])

    def cell_attrs(r, col):
        if col < 3:
            return ""
        value = rows[r][col]
        return (f' data-depth="{depth.depths[r]!r}" data-category="{escape(depth.categories[col - 3])}"'
                f' data-value="{"" if value is None else repr(value)}"')

    largest = depth.max_abs_difference()
    headline = (f"Largest difference: {largest[0]:+.1f} points for {largest[1]} at depth {largest[2]:.2f}."
                if largest else "No depth where both runs have labels.")
    inner = (f'<p class="note">{escape(INTERPOLATION_NOTE)} In the figure, the categories of the charts\' "other" '
             f'area are summed into one row; the table lists every category. {escape(headline)}</p>'
             + svg_img(c.svgs["compare_share_difference"], "category share difference", "chart-compare-difference")
             + "<details><summary>the table (B minus A, percentage points; every category)</summary>"
             + table(["relative depth", f"A layer ({c.a.name})", f"B layer ({c.b.name})"] + depth.categories, rows,
                     "compare-difference-table", 3, cell_attrs)
             + "</details>")
    return "compare-difference", f"Difference: {c.b.name} minus {c.a.name}", inner


def _layer_text(run: RunView, layer: int | None) -> str:
    return run.naming.label(layer) if layer is not None else "(interpolated)"


def entropy_section(c: Comparison) -> tuple[str, str, str]:
    rows = []
    for run, tag in ((c.a, "A"), (c.b, "B")):
        for j, layer in enumerate(run.grid.layers):
            rows.append([f"{tag}: {run.name}", run.naming.label(layer), f"{run.naming.depth(layer):.4f}",
                         _finite(run.stats.entropy["mean"][j]), _finite(run.stats.entropy["median"][j])])
    inner = ('<p class="note">Mean over the generated tokens of the entropy of the full next-token distribution '
             '(bits), per caption; lines: mean over images, bands: 25-75th percentile; each run at its own '
             'layers\' relative depths.</p>'
             + svg_img(c.svgs["compare_entropy"], "caption entropy per layer, both runs", "chart-compare-entropy")
             + "<details><summary>per-layer numbers</summary>"
             + table(["run", "layer", "relative depth", "entropy mean", "entropy median"], rows,
                     "compare-entropy-table", 3) + "</details>")
    return "compare-entropy", "Caption entropy, both runs", inner


def _finite(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


COMPARE_BROWSER = """<p class="note">Images both runs captioned (same image key): every layer's caption of each run, side
by side, rows aligned by relative depth (a run without a layer at that depth leaves its cell empty). Each run's layers
are labelled by its model's own numbering. Caption parts are coloured by category (hover for the labels); the number
after a caption is its entropy (bits per token). Search matches captions of either run and image keys.</p>
"""
COMPARE_BROWSER += browser_controls("cmp-", (5, 10, 20, 50), search_label="search both runs")


def browser_section(c: Comparison) -> tuple[str, str, str]:
    note = f'<p class="note">{escape(image_counts_text(c))}: only the shared images are shown here.</p>'
    sample = sample_note(len(c.browser_keys), len(c.shared_keys), "each run's own report (image_captions.parquet)")
    if sample:
        note += f'<p class="note" id="compare-browser-sample">{escape(sample)}</p>'
    return "compare-browser", "Images, both runs", note + COMPARE_BROWSER


def _run_data(run: RunView, keys: list[str], categories: dict[str, int], label_index: dict[str, int]) -> dict:
    """One run's part of the browser data: its layers (label, depth), its captions once each with their
    coloured parts, and per (shared image, layer) the caption's index and entropy."""
    grid = run.grid
    image_index = {k: i for i, k in enumerate(grid.image_keys)}
    cells = intern_captions(grid, [image_index[k] for k in keys], run.labels, categories, label_index)
    return {
        "name": run.name,
        "family": run.naming.family,
        "layers": grid.layers,
        "labels": [run.naming.label(layer) for layer in grid.layers],
        "depths": [round(d, 4) for d in run.depths],
        "captions": cells.captions,
        "spans": cells.spans,
        "cap": cells.cap.tolist(),
        "ent": cells.per_cell(grid.entropy),
    }


def browser_rows(a: RunView, b: RunView) -> list[list]:
    """[depth, index into A's layers or -1, index into B's layers or -1] per row, by depth."""
    rows: dict[float, list] = {}
    for which, run in ((1, a), (2, b)):
        for j, depth in enumerate(run.depths):
            rows.setdefault(round(depth, 9), [round(depth, 4), -1, -1])[which] = j
    return [rows[d] for d in sorted(rows)]


def browser_data(c: Comparison) -> dict:
    # every category a caption part may have; not the charts' "other" group
    categories = [name for name in c.colours if name in c.depth.categories or name not in c.chart_categories]
    category_index = {name: i for i, name in enumerate(categories)}
    label_index: dict[str, int] = {}
    runs = [_run_data(c.a, c.browser_keys, category_index, label_index),
            _run_data(c.b, c.browser_keys, category_index, label_index)]
    images = c.images
    return {
        "categories": categories,
        "colours": [c.colours[name] for name in categories],
        "labelSets": list(label_index),
        "runs": runs,
        "rows": browser_rows(c.a, c.b),
        "keys": c.browser_keys,
        "thumbs": [images.thumbnails.get(k, "") for k in c.browser_keys] if images else None,
    }


def compare_script(c: Comparison) -> PageScript:
    return PageScript("compare-data", browser_data(c), asset_text("compare_browser.js"))


def compare_sections(c: Comparison) -> list[tuple[str, str, str]]:
    """The comparison's sections in page order (the browser last)."""
    return [header_section(c), shares_section(c), difference_section(c), entropy_section(c), browser_section(c)]


def method_notes(c: Comparison) -> list[tuple[str, bool]]:
    """Each run's caption precision under the title, a deviation from the study's method marked."""
    return [(f"A ({c.a.name}): {c.a.precision.text}", c.a.precision.deviation),
            (f"B ({c.b.name}): {c.b.precision.text}", c.b.precision.deviation)]


def provenance_sections(c: Comparison, report_params: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """How each run was made: the provenance stored in its tables' metadata."""
    out = []
    for run, tag in ((c.a, "a"), (c.b, "b")):
        counts = [("images", f"{len(run.grid.image_keys):,}"), ("layers", ", ".join(map(str, run.grid.layers))),
                  ("caption rows", f"{int((run.grid.rows >= 0).sum()):,}"), ("layer naming", run.naming.source_text())]
        out.append((f"run-{tag}", f"How run {tag.upper()} ({run.name}) was made",
                    provenance_html(run.inputs.provenance, run.inputs.sources, counts, report_params)))
    return out

