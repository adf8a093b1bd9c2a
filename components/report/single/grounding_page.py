"""The maps of where each caption looks (issue #21) in the report: the spread figure and its
table (single run), the section of the page, and the maps the image browsers draw over the
thumbnails (``grounding_overlay.js``: the single run's browser and the comparison's, both runs
side by side). Nothing here when no run has maps: the page is then as without this module.

The browsers get each map quantised to 8 bits relative to its own largest patch (where the caption
looks, not how concentrated: the figure and the per-map top-10% share say that), base64 per
(image, layer), for the first images up to a size budget (``MAP_CHARS_BUDGET``)."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass

import numpy as np

from ...common import storage
from ...common.contracts import FAMILY_COCA, FAMILY_LLAVA
from ..assets.loader import asset_text
from ..inputs.layer_naming import LayerNaming
from ..inputs.tables import ReportInputs
from ..metrics.grounding_maps import LayerSpread, RunMaps, layer_spread, map_spread, read_run_maps, top_count
from ..metrics.layer_stats import CaptionGrid
from ..page.html import PageScript, svg_img, table
from ..page.outputs import write_csv
from . import plots

# Families whose image transform resizes the short side and crops the centre square (the map covers
# that square of the thumbnail); the others (BLIP, VisionEncoderDecoder) resize the whole image to a
# square, so the map covers the whole thumbnail.
CENTRE_CROP_FAMILIES = (FAMILY_COCA, FAMILY_LLAVA)
MAP_CHARS_BUDGET = 8_000_000   # characters of base64 maps per page (~8 MB): about 1,300 images of 24 layers x 196 patches
SPREAD_COLUMNS = ["layer", "layer_label", "relative_depth", "n_maps", "entropy_bits_p25", "entropy_bits_median",
                  "entropy_bits_p75", "top10_share_p25", "top10_share_median", "top10_share_p75"]


@dataclass
class RunGrounding:
    """A run's maps and their spread per layer, with the spread figure rendered."""

    maps: RunMaps
    spread: LayerSpread
    view: str                  # "square": the map covers the thumbnail's centre square; "whole": all of it
    png: bytes = b""
    svg: bytes = b""


def model_view(family: str) -> str:
    """Which part of the image the encoder saw, so the map is drawn over that part."""
    return "square" if family in CENTRE_CROP_FAMILIES else "whole"


def run_grounding(inputs: ReportInputs, grid: CaptionGrid, naming: LayerNaming,
                  figure: bool = True) -> RunGrounding | None:
    """The run's maps, their spread and (``figure``) its figure; None when its captions carry no maps."""
    maps = read_run_maps(inputs)
    if maps is None:
        return None
    spread = layer_spread(maps, grid)
    g = RunGrounding(maps, spread, model_view(naming.family))
    if figure:
        g.png, g.svg = plots.render(spread_figure(spread, naming))
    return g


# ------------------------------------------------------------------ figure, files, numbers

def spread_figure(spread: LayerSpread, naming: LayerNaming | None = None):
    """Entropy (bits) and top-10% share of the maps per layer: median, 25-75% band, the uniform map's value."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    x = np.asarray(spread.layers, dtype=float)
    panels = (
        (axes[0], spread.entropy_bits, 1.0, "#1f77b4", "map entropy (bits)", spread.uniform_entropy_bits,
         f"uniform map: log2({spread.n_patches}) = {spread.uniform_entropy_bits:.2f} bits"),
        (axes[1], spread.top_share, 100.0, "#d95f02", f"share of the top 10% of patches ({spread.top_k} of "
                                                      f"{spread.n_patches}), %", spread.uniform_top_share * 100,
         f"uniform map: {spread.uniform_top_share * 100:.1f}%"),
    )
    for ax, values, scale, colour, ylabel, uniform, uniform_label in panels:
        lo, mid, hi = (np.asarray(values[k], dtype=float) * scale for k in ("p25", "median", "p75"))
        ax.fill_between(x, lo, hi, color=colour, alpha=0.25, label="25-75th percentile")
        ax.plot(x, mid, color=colour, marker="o", markersize=3.5, linewidth=1.6, label="median")
        ax.axhline(uniform, color="#555555", linestyle="--", linewidth=1.0, label=uniform_label)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, uniform * 1.08 if scale == 1.0 else 100)
        plots._layer_axis(ax, spread.layers, naming)
        if len(x) == 1:
            ax.set_xlim(x[0] - 1, x[0] + 1)
        ax.legend(frameon=False, fontsize=9, loc="lower left" if scale == 1.0 else "upper left")
    axes[0].set_title("how spread each caption's map is (0: one patch)", fontsize=11)
    axes[1].set_title("how much of the map its top 10% of patches hold", fontsize=11)
    fig.tight_layout()
    return fig


def spread_rows(spread: LayerSpread, naming: LayerNaming | None = None) -> list[dict]:
    rows = []
    for j, layer in enumerate(spread.layers):
        rows.append({
            "layer": layer, "layer_label": naming.label(layer) if naming else f"block {layer}",
            "relative_depth": naming.depth(layer) if naming else "", "n_maps": spread.n_maps[j],
            **{f"entropy_bits_{k}": spread.entropy_bits[k][j] for k in ("p25", "median", "p75")},
            **{f"top10_share_{k}": spread.top_share[k][j] for k in ("p25", "median", "p75")},
        })
    return rows


def write_grounding_files(out_uri: str, g: RunGrounding | None, naming: LayerNaming | None = None) -> dict[str, str]:
    """plots/grounding_spread.{png,svg} and grounding_spread.csv (nothing without maps)."""
    if g is None:
        return {}
    files = {}
    for ext, data in (("png", g.png), ("svg", g.svg)):
        files[f"plots/grounding_spread.{ext}"] = uri = storage.join(out_uri, "plots", f"grounding_spread.{ext}")
        storage.write_bytes(uri, data)
    files["grounding_spread.csv"] = write_csv(storage.join(out_uri, "grounding_spread.csv"), SPREAD_COLUMNS,
                                              spread_rows(g.spread, naming))
    return files


def grounding_metrics(g: RunGrounding | None) -> dict[str, float]:
    """Headline numbers of the maps (none without maps): how many, and the last layer's medians."""
    if g is None:
        return {}
    spread = g.spread
    metrics = {"grounding_maps": float(sum(spread.n_maps)), "grounding_maps_unusable": float(g.maps.unusable)}
    for key, values in (("grounding_entropy_bits_median_last_layer", spread.entropy_bits["median"]),
                        ("grounding_top10_share_median_last_layer", spread.top_share["median"])):
        if math.isfinite(values[-1]):
            metrics[key] = float(values[-1])
    return metrics


def grounding_markdown(g: RunGrounding | None) -> str:
    """The summary's paragraph on the maps (empty without maps)."""
    if g is None:
        return ""
    s = g.spread
    rows, cols = g.maps.grid
    text = f"\nWhere the captions look: {sum(s.n_maps):,} per-patch maps on the {rows} x {cols} patch grid"
    if math.isfinite(s.entropy_bits["median"][-1]):
        text += (f"; at the last layer the median map has {s.entropy_bits['median'][-1]:.2f} bits of entropy "
                 f"(uniform: {s.uniform_entropy_bits:.2f}) and its top 10% of patches hold "
                 f"{s.top_share['median'][-1] * 100:.1f}% (uniform: {s.uniform_top_share * 100:.1f}%)")
    return text + " (plots/grounding_spread.png, grounding_spread.csv).\n"


# ------------------------------------------------------------------ the page

VIEW_TEXT = {"square": "the centre square of the image (the model resizes the short side and crops the centre)",
             "whole": "the whole image (the model resizes it to a square)"}


def spread_section(g: RunGrounding, naming: LayerNaming, embedded_images: int, images_with_maps: int) -> tuple[str, str, str]:
    s = g.spread
    rows, cols = g.maps.grid
    note = (f'<p class="note">For every caption, how much each of the {rows} x {cols} image patches moved it: '
            "gradient x input of the caption's log-likelihood at the tokens the decoder reads, normalised to "
            f"sum to 1 (the caption step's grounding maps). Left: the map's entropy in bits (log2 {s.n_patches} = "
            f"{s.uniform_entropy_bits:.2f} for a uniform map, 0 for a single patch); right: the share of the map "
            f"its top 10% of patches ({s.top_k}) hold. Lines: median over images, bands: 25-75th percentile. "
            f"In the image browser below, the map of the selected layer is drawn over {VIEW_TEXT[g.view]}; with "
            "all layers shown, point at a caption to see its layer's map.")
    if embedded_images < images_with_maps:
        note += (f" The page carries the maps of the first {embedded_images:,} of the {images_with_maps:,} images "
                 "with maps (its size budget); the figure uses them all.")
    if g.maps.unusable:
        note += f" {g.maps.unusable:,} maps were left out: negative or non-finite values, or all zero."
    table_rows = [[r["layer_label"], r["n_maps"]] + [_finite(r[k]) for k in SPREAD_COLUMNS[4:]]
                  for r in spread_rows(s, naming)]
    inner = (note + "</p>" + svg_img(g.svg, "how spread the maps are, per layer", "chart-grounding")
             + "<details><summary>per-layer numbers</summary>"
             + table(["layer", "maps", "entropy p25", "entropy median", "entropy p75", "top-10% share p25",
                      "top-10% share median", "top-10% share p75"], table_rows, "grounding-table", 1)
             + "</details>")
    return "grounding", "Where the captions look", inner


def _finite(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def encode_map(s: np.ndarray) -> str:
    """A map as the page draws it: 8 bits per patch relative to its largest patch, base64."""
    q = np.rint(s / s.max() * 255).astype(np.uint8)
    return base64.b64encode(q.tobytes()).decode("ascii")


def _image_maps(g: RunGrounding, rows: list[int]) -> tuple[list[str], list[int]]:
    """One image's maps per layer (``rows``: its caption row per layer, -1: none) and their top-10% share (%)."""
    have = [r for r in rows if r >= 0 and g.maps.present[r]]
    if not have:
        return [], []
    maps = g.maps.normalised(np.asarray(have))
    _, top = map_spread(maps)
    encoded = dict(zip(have, (encode_map(m) for m in maps)))
    shares = dict(zip(have, (int(round(t * 100)) for t in top)))
    return [encoded.get(r, "") for r in rows], [shares.get(r, -1) for r in rows]


def _maps_of_images(g: RunGrounding, row_lists: list[list[int]], budget: int) -> tuple[dict, int, int]:
    """Maps of images in order while the budget lasts: per image null (no map), "" (not in the page) or a
    list per layer; returns the data, the images embedded and the images with maps."""
    maps: list[list[str] | str | None] = []
    tops: list[list[int] | None] = []
    used = embedded = with_maps = 0
    for rows in row_lists:
        if not any(r >= 0 and g.maps.present[r] for r in rows):
            maps.append(None)
            tops.append(None)
            continue
        with_maps += 1
        if used >= budget:
            maps.append("")
            tops.append(None)
            continue
        encoded, top = _image_maps(g, rows)
        used += sum(len(e) for e in encoded)
        embedded += 1
        maps.append(encoded)
        tops.append(top)
    return {"maps": maps, "top": tops}, embedded, with_maps


def _run_part(g: RunGrounding, naming: LayerNaming, layers: list[int], row_lists: list[list[int]], budget: int,
              name: str | None = None) -> tuple[dict, int, int]:
    data, embedded, with_maps = _maps_of_images(g, row_lists, budget)
    data.update(grid=list(g.maps.grid), view=g.view, topK=top_count(g.maps.n_patches),
                layers=layers, labels=[naming.label(layer) for layer in layers])
    if name is not None:
        data["name"] = name
    return data, embedded, with_maps


def single_maps(g: RunGrounding, grid: CaptionGrid, naming: LayerNaming,
                budget: int = MAP_CHARS_BUDGET, shown: list[int] | None = None) -> tuple[dict, int, int]:
    """The single run's browser part: per image the browser embeds (``shown``, default all; the grid's
    order) its maps per layer."""
    indices = range(len(grid.rows)) if shown is None else shown
    return _run_part(g, naming, grid.layers, [list(map(int, grid.rows[i])) for i in indices], budget)


def compare_maps(comparison, groundings: tuple[RunGrounding | None, RunGrounding | None],
                 budget: int = MAP_CHARS_BUDGET) -> dict | None:
    """The comparison browser's part: per run (null without maps) per shared image its maps per layer,
    and the browser's rows by depth (to find each run's layer in a row)."""
    from ..compare.sections import browser_rows

    if not any(groundings):
        return None
    runs = []
    for run, g in zip((comparison.a, comparison.b), groundings):
        if g is None:
            runs.append(None)
            continue
        index = {k: i for i, k in enumerate(run.grid.image_keys)}
        row_lists = [list(map(int, run.grid.rows[index[k]])) for k in comparison.browser_keys]
        runs.append(_run_part(g, run.naming, run.grid.layers, row_lists, budget // 2, run.name)[0])
    return {"rows": browser_rows(comparison.a, comparison.b), "runs": runs}


def grounding_script(single: dict | None = None, compare: dict | None = None) -> PageScript | None:
    """The maps for the browsers and the overlay script, placed before the browsers' scripts (None: no maps)."""
    if single is None and compare is None:
        return None
    return PageScript("grounding-data", {"single": single, "compare": compare}, asset_text("grounding_overlay.js"))


def compare_grounding(comparison, this_run: RunGrounding | None = None) -> dict | None:
    """Both runs' maps for the comparison's browser (``this_run``: run A's, already read by the single report)."""
    a = this_run or run_grounding(comparison.a.inputs, comparison.a.grid, comparison.a.naming, figure=False)
    b = run_grounding(comparison.b.inputs, comparison.b.grid, comparison.b.naming, figure=False)
    return compare_maps(comparison, (a, b))


def page_parts(g: RunGrounding | None, grid: CaptionGrid, naming: LayerNaming,
               comparison=None, shown: list[int] | None = None) -> tuple[list[tuple[str, str, str]], PageScript | None]:
    """The single page's grounding section (before the image browser) and the maps script (None: no run has maps)."""
    sections, single = [], None
    if g is not None:
        single, embedded, with_maps = single_maps(g, grid, naming, shown=shown)
        sections.append(spread_section(g, naming, embedded, with_maps))
    compare = compare_grounding(comparison, g) if comparison is not None else None
    return sections, grounding_script(single, compare)


def compare_grounding_scripts(comparison) -> list[PageScript]:
    """The comparison page's maps script, to go before its browser's (empty: neither run has maps)."""
    script = grounding_script(compare=compare_grounding(comparison))
    return [script] if script else []
