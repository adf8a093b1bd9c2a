"""Tables -> report: one self-contained HTML page, PNG/SVG plots, a Markdown summary, metrics.

``build_report`` is what the CLI (``lverb report``) and the KFP component call.
Files written under ``out_uri`` (a folder or an ``s3://``/``minio://`` prefix)::

    report.html             the page (no network needed to open it)
    summary.md              a short summary (KFP Output[Markdown])
    metrics.json            headline numbers (KFP Output[Metrics])
    category_share.csv      the per-layer category table the chart is drawn from
    layer_stats.csv         per-layer entropy / distance numbers
    plots/{category_share,entropy,distance_to_final,stays_close}.{png,svg}
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from html import escape as _e

import numpy as np

from ..common import storage
from ..common.version import __version__
from . import categories as cat
from . import plots
from .inputs import ReportInputs, load_inputs
from .layer_stats import CaptionGrid, LayerStats, compute_layer_stats
from .page import page, svg_img, table
from .provenance_view import find_skipped, provenance_html
from .thumbnails import ShardImages, read_shard_images

log = logging.getLogger("lverb.report")

COLOUR_NAMES = ("color", "colour")


@dataclass
class ReportResult:
    metrics: dict[str, float]     # headline numbers, all finite floats (KFP Metrics)
    markdown: str                 # short summary (KFP Markdown)
    html: str                     # the page itself (KFP HTML)
    files: dict[str, str] = field(default_factory=dict)  # name -> URI written


@dataclass
class LabelView:
    """Labels joined to captions: per distinct caption its parts' categories and spans."""

    label_map: dict[str, str] | None
    parts: dict[str, list[dict]]             # caption -> parts (first labels row wins)
    status: Counter                          # status -> distinct captions
    valid: set[str]                          # captions whose answer counts (parts, not unparseable/truncated)


def build_report(captions_uris: list[str] | str, labels_uri: str | None, aggregate_uri: str | None,
                 out_uri: str, images_pattern: str | None = None, *, categories_uri: str | None = None,
                 close_f1: float = 0.5, min_share_percent: float = 5.0, thumbnail_px: int = 96,
                 max_thumbnails: int | None = None, title: str = "What each layer sees") -> ReportResult:
    """Read the tables, write the report under ``out_uri``, return metrics, Markdown and HTML.

    ``categories_uri``: optional label-to-category YAML (``category: [labels]``) used to
    colour caption parts (and, without ``aggregate_uri``, to aggregate); by default the
    map stored in the aggregate table's metadata, else each part's first label.
    ``close_f1``: token F1 to the last layer's caption above which a caption counts as close.
    ``min_share_percent``: categories never reaching this share in any layer are drawn as one
    "other" area (the table keeps them all).
    """
    t0 = time.perf_counter()
    inputs = load_inputs(captions_uris, labels_uri, aggregate_uri)
    grid = CaptionGrid.from_table(inputs.captions)
    images = None
    if images_pattern:
        images = read_shard_images(images_pattern, set(grid.image_keys), thumbnail_px, max_thumbnails)
        inputs.sources["images"] = images.shards
    stats = compute_layer_stats(grid, images.references if images else None, close_f1)

    label_map = None
    if categories_uri:
        label_map = cat.load_category_map(categories_uri)
    elif inputs.aggregate is not None:
        label_map = cat.category_map_from_metadata((inputs.provenance.get("aggregate") or [{}])[0])
    labels = _label_view(inputs, label_map)

    warnings: list[str] = []
    aggregate = inputs.aggregate
    share_source = "the aggregate table"
    if aggregate is None and inputs.labels is not None:
        aggregate = cat.share_from_labels(inputs.captions, inputs.labels, label_map)
        share_source = "the labels table (the study's method: first label per part" + (
            ", merged by the category map)" if label_map else ", no merge: raw labels)")
    shares = cat.share_matrix(aggregate, grid.layers) if aggregate is not None else None
    if shares is not None:
        sums = shares.layer_sums()
        off = [(layer, s) for layer, s in zip(shares.layers, sums) if not math.isnan(s) and abs(s - 100) > 0.5]
        if off:
            warnings.append("category shares do not sum to 100% at layers " + ", ".join(
                f"{layer} ({s:.1f}%)" for layer, s in off[:8]) + ": the aggregate table is incomplete")
        empty = [layer for layer, s in zip(shares.layers, sums) if math.isnan(s)]
        if empty and shares.categories:
            warnings.append(f"no valid labels at layer{'s' if len(empty) > 1 else ''} "
                            + ", ".join(map(str, empty)) + " (shown as gaps)")
    if grid.duplicates:
        warnings.append(f"{grid.duplicates} (image, layer) rows appear more than once in the captions; the first was kept")
    if images and images.unreadable:
        n_bad = len(images.unreadable)
        warnings.append(f"{n_bad} image{'s' if n_bad != 1 else ''} could not be read for thumbnails: "
                        + ", ".join(k for k, _ in images.unreadable[:10]))
    if images and len(images.thumbnails) < len(grid.image_keys) and max_thumbnails is None:
        missing = len(grid.image_keys) - len(images.thumbnails)
        warnings.append(f"{missing} images of the captions were not found in the shards {images_pattern}")

    # colours: chart categories first (so the page and the figure agree), then any others
    all_cats = list(shares.categories) if shares else []
    extra = sorted({c for ps in labels.parts.values() for c in (p["category"] for p in ps)} - set(all_cats))
    weight = {c: float(np.nansum(shares.values[:, j])) for j, c in enumerate(all_cats)} if shares else {}
    colours = cat.category_colours(all_cats + extra, weight)
    chart = cat.group_small(shares, min_share_percent) if shares else None
    if chart is not None:
        colours.update({c: v for c, v in cat.category_colours(chart.categories).items() if c.startswith(cat.OTHER)})

    metrics = headline_metrics(inputs, grid, stats, labels, shares)
    files: dict[str, str] = {}
    figures = {
        "entropy": plots.entropy(stats),
        "distance_to_final": plots.distance_to_final(stats),
        "stays_close": plots.stays_close(stats),
    }
    if chart is not None:
        figures["category_share"] = plots.category_share(chart, colours)
    svgs: dict[str, bytes] = {}
    for name, fig in figures.items():
        png, svg = plots.render(fig)
        svgs[name] = svg
        for ext, data in (("png", png), ("svg", svg)):
            uri = storage.join(out_uri, "plots", f"{name}.{ext}")
            storage.write_bytes(uri, data)
            files[f"plots/{name}.{ext}"] = uri

    share_rows = shares.rows() if shares else []
    layer_rows = _layer_rows(stats, shares)
    files["category_share.csv"] = _write_csv(storage.join(out_uri, "category_share.csv"),
                                             ["layer", "category", "share_percent", "n_captions"], share_rows)
    files["layer_stats.csv"] = _write_csv(storage.join(out_uri, "layer_stats.csv"), list(layer_rows[0]), layer_rows)

    markdown = summary_markdown(metrics, stats, shares, warnings)
    report_params = [
        ("package", f"latent-verbalizer {__version__}"),
        ("made", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("category shares from", share_source),
        ("category map", categories_uri or ("from the aggregate table's metadata" if label_map else "none (first raw label)")),
        ("close to final", f"token F1 >= {close_f1:g}"),
        ("chart groups categories below", f"{min_share_percent:g}% in every layer"),
        ("text metrics", "BLEU-4 and CIDEr-D as in coco-caption, but tokenised in Python "
                         "(lower-case, punctuation dropped), not with the Java PTB tokenizer"),
    ]
    html = _html(title, inputs, grid, stats, labels, shares, chart, colours, svgs, metrics, images,
                 warnings, report_params, share_source)
    storage.write_bytes(storage.join(out_uri, "summary.md"), markdown.encode())
    storage.write_bytes(storage.join(out_uri, "metrics.json"), json.dumps(metrics, indent=1).encode())
    storage.write_bytes(storage.join(out_uri, "report.html"), html.encode())
    for name in ("summary.md", "metrics.json", "report.html"):
        files[name] = storage.join(out_uri, name)
    log.info("report: %d images x %d layers -> %s (%.1f MB HTML) in %.1fs", len(grid.image_keys), len(grid.layers),
             files["report.html"], len(html.encode()) / 1e6, time.perf_counter() - t0)
    return ReportResult(metrics, markdown, html, files)


# ------------------------------------------------------------------ pieces

def _label_view(inputs: ReportInputs, label_map: dict[str, str] | None) -> LabelView:
    parts: dict[str, list[dict]] = {}
    status: Counter = Counter()
    valid: set[str] = set()
    if inputs.labels is not None:
        t = inputs.labels
        for c, ps, st in zip(t.column("caption").to_pylist(), t.column("parts").to_pylist(),
                             t.column("status").to_pylist()):
            if c in parts:
                continue
            status[st] += 1
            rows = []
            for p in ps or []:
                labs = [x for x in (p.get("labels") or []) if x]
                rows.append({"text": p.get("text") or "", "labels": labs,
                             "category": cat.part_category(p.get("labels") or [], label_map)})
            parts[c] = rows
            if cat.answer_counts(ps, st):
                valid.add(c)
    return LabelView(label_map, parts, status, valid)


def caption_spans(caption: str, parts: list[dict], cat_index: dict[str, int], label_index: dict[str, int]) -> list[int]:
    """Where each part sits in the caption, in order: flat [start, end, category, labels] * n,
    offsets in UTF-16 code units (JavaScript string indices). Parts not found are left out."""
    out: list[int] = []
    lower = caption.lower()
    hay = lower if len(lower) == len(caption) else caption
    pos = 0
    for p in parts:
        t = p["text"].strip()
        if not t:
            continue
        needle = t.lower() if hay is lower else t
        i = hay.find(needle, pos)
        if i < 0:
            continue
        j = i + len(needle)
        labs = ", ".join(p["labels"])
        if labs not in label_index:
            label_index[labs] = len(label_index)
        out.extend([i, j, cat_index[p["category"]], label_index[labs]])
        pos = j
    if out and any(ord(ch) > 0xFFFF for ch in caption):
        for k in range(0, len(out), 4):
            out[k] = len(caption[:out[k]].encode("utf-16-le")) // 2
            out[k + 1] = len(caption[:out[k + 1]].encode("utf-16-le")) // 2
    return out


def browser_data(grid: CaptionGrid, stats: LayerStats, labels: LabelView, categories: list[str],
                 colours: dict[str, str], images: ShardImages | None) -> dict:
    cat_index = {c: i for i, c in enumerate(categories)}
    label_index: dict[str, int] = {}
    uniq: dict[str, int] = {}
    captions: list[str] = []
    spans: list[list[int]] = []
    n_img, n_lay = grid.rows.shape
    cap = np.full(n_img * n_lay, -1, dtype=np.int64)
    ent = np.full(n_img * n_lay, -1, dtype=np.int64)
    f1 = np.full(n_img * n_lay, -1, dtype=np.int64)
    for i in range(n_img):
        for j in range(n_lay):
            r = grid.rows[i, j]
            if r < 0:
                continue
            c = grid.captions[r]
            k = uniq.get(c)
            if k is None:
                k = uniq[c] = len(captions)
                captions.append(c)
                spans.append(caption_spans(c, labels.parts.get(c, []), cat_index, label_index))
            cap[i * n_lay + j] = k
            e = grid.entropy[r]
            ent[i * n_lay + j] = int(round(e * 100)) if math.isfinite(e) else -1
            v = stats.row_f1[r]
            f1[i * n_lay + j] = int(round(v * 100)) if math.isfinite(v) else -1
    shard_names = list(dict.fromkeys(grid.shards))
    sidx = {s: i for i, s in enumerate(shard_names)}
    data = {
        "layers": grid.layers,
        "categories": categories,
        "colours": [colours[c] for c in categories],
        "labelSets": list(label_index),
        "captions": captions,
        "spans": spans,
        "images": {
            "keys": grid.image_keys,
            "shards": shard_names,
            "shard": [sidx[s] for s in grid.shards],
            "cap": cap.tolist(),
            "ent": ent.tolist(),
            "f1": f1.tolist(),
            "settle": stats.stays_close,
            "thumbs": [images.thumbnails.get(k, "") for k in grid.image_keys] if images else None,
            "refs": [images.references.get(k, []) for k in grid.image_keys] if images and images.references else None,
        },
    }
    return data


def colour_stops_dominating(shares: cat.ShareMatrix | None) -> tuple[int | None, list[str | None]]:
    """Per layer the largest category other than UNKNOWN/other, and the first layer from which
    colour is never that category again (None: colour never leads, or still leads at the end)."""
    if shares is None or not shares.categories:
        return None, []
    known = [j for j, c in enumerate(shares.categories) if c != cat.UNKNOWN and not c.startswith(cat.OTHER)]
    top: list[str | None] = []
    for i in range(len(shares.layers)):
        row = shares.values[i]
        if np.isnan(row).all() or not known:
            top.append(None)
            continue
        j = max(known, key=lambda k: row[k])
        top.append(shares.categories[j])
    is_colour = [t is not None and t.lower() in COLOUR_NAMES for t in top]
    if not any(is_colour) or is_colour[-1]:
        return None, top
    last = max(i for i, v in enumerate(is_colour) if v)
    return shares.layers[last + 1], top


def headline_metrics(inputs: ReportInputs, grid: CaptionGrid, stats: LayerStats, labels: LabelView,
                     shares: cat.ShareMatrix | None) -> dict[str, float]:
    n_rows = int((grid.rows >= 0).sum())
    distinct = {grid.captions[r] for r in grid.rows[grid.rows >= 0]}
    m: dict[str, float] = {
        "images": len(grid.image_keys),
        "layers": len(grid.layers),
        "captions": n_rows,
        "unique_captions": len(distinct),
        "entropy_first_layer_mean": stats.entropy["mean"][0],
        "entropy_last_layer_mean": stats.entropy["mean"][-1],
        "captions_stopped_by_length_percent": 100.0 * sum(1 for r in grid.rows[grid.rows >= 0]
                                                          if grid.stops[r] == "length") / max(n_rows, 1),
    }
    settled = [v for v in stats.stays_close if v is not None]
    if settled:
        m["median_layer_caption_settles"] = float(np.median(settled))
    if len(grid.layers) > 1:
        m["f1_to_final_mid_layer"] = stats.f1_to_final[len(grid.layers) // 2]
    if stats.cider_to_refs is not None:
        m["images_with_references"] = stats.n_with_refs
        m["cider_d_last_layer"] = stats.cider_to_refs[-1]
        m["bleu4_last_layer"] = stats.bleu4_to_refs[-1]
        best = int(np.nanargmax(stats.cider_to_refs))
        m["best_cider_d_layer"] = grid.layers[best]
    if inputs.labels is not None:
        in_labels = sum(1 for c in distinct if c in labels.parts)
        m["captions_labelled"] = in_labels
        m["answers_valid_percent"] = 100.0 * sum(1 for c in distinct if c in labels.valid) / max(in_labels, 1)
        m["captions_unlabelled"] = len(distinct) - in_labels
    stop_layer, _ = colour_stops_dominating(shares)
    if stop_layer is not None:
        m["layer_colour_stops_dominating"] = stop_layer
    return {k: float(v) for k, v in m.items() if v is not None and math.isfinite(float(v))}


def _layer_rows(stats: LayerStats, shares: cat.ShareMatrix | None) -> list[dict]:
    _, top = colour_stops_dominating(shares)
    rows = []
    for j, layer in enumerate(stats.layers):
        row = {
            "layer": layer,
            "captions": stats.n_captions[j],
            "unique_captions": stats.unique_captions[j],
            "entropy_mean": stats.entropy["mean"][j],
            "entropy_std": stats.entropy["std"][j],
            "entropy_median": stats.entropy["median"][j],
            "f1_to_final": stats.f1_to_final[j],
            "bleu4_to_final": stats.bleu4_to_final[j],
        }
        if stats.cider_to_refs is not None:
            row["bleu4_to_refs"] = stats.bleu4_to_refs[j]
            row["cider_d_to_refs"] = stats.cider_to_refs[j]
        if shares is not None:
            row["labelled_captions"] = shares.n_captions[j]
            row["top_category"] = (top[j] if top else None) or ""
        rows.append(row)
    return rows


def _write_csv(uri: str, header: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    storage.write_bytes(uri, buf.getvalue().encode())
    return uri


def summary_markdown(metrics: dict[str, float], stats: LayerStats, shares: cat.ShareMatrix | None,
                     warnings: list[str]) -> str:
    def g(k, d=2):
        v = metrics.get(k)
        return "–" if v is None else (f"{int(v)}" if d == 0 else f"{v:.{d}f}")

    lines = [
        "# latent-verbalizer report",
        "",
        f"{g('images', 0)} images x {g('layers', 0)} layers = {g('captions', 0)} captions "
        f"({g('unique_captions', 0)} distinct).",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| mean caption entropy, first layer (bits/token) | {g('entropy_first_layer_mean')} |",
        f"| mean caption entropy, last layer (bits/token) | {g('entropy_last_layer_mean')} |",
        f"| median layer from which a caption stays close to the final one (F1 >= {stats.close_threshold:g}) | "
        f"{g('median_layer_caption_settles', 1)} |",
        f"| captions cut at the length limit | {g('captions_stopped_by_length_percent', 1)}% |",
    ]
    if "answers_valid_percent" in metrics:
        lines.append(f"| LLM answers valid (distinct captions) | {g('answers_valid_percent', 1)}% |")
    if "layer_colour_stops_dominating" in metrics:
        lines.append(f"| layer where colour stops being the main category | {g('layer_colour_stops_dominating', 0)} |")
    if "cider_d_last_layer" in metrics:
        lines.append(f"| CIDEr-D / BLEU-4 vs references, last layer | {g('cider_d_last_layer', 3)} / {g('bleu4_last_layer', 3)} |")
        lines.append(f"| layer with the best CIDEr-D | {g('best_cider_d_layer', 0)} |")
    if shares is not None and shares.categories:
        _, top = colour_stops_dominating(shares)
        seq = []
        for layer, t in zip(shares.layers, top):
            if t is None:
                continue
            if seq and seq[-1][1] == t:
                seq[-1] = (seq[-1][0], t, layer)
            else:
                seq.append((layer, t, layer))
        if seq:
            lines += ["", "Main category (besides UNKNOWN) by layer: " + "; ".join(
                f"{a}-{b} {t}" if a != b else f"{a} {t}" for a, t, b in seq) + "."]
    if warnings:
        lines += [""] + [f"- warning: {w}" for w in warnings]
    lines += ["", "Full report: report.html (plots as PNG/SVG under plots/)."]
    return "\n".join(lines) + "\n"


def _html(title, inputs, grid, stats, labels, shares, chart, colours, svgs, metrics, images, warnings,
          report_params, share_source) -> str:
    def mv(k, d=2, suffix=""):
        v = metrics.get(k)
        return "–" if v is None else (f"{int(v):,}" if d == 0 else f"{v:.{d}f}") + suffix

    headline = [
        ("images", mv("images", 0)), ("layers", mv("layers", 0)), ("captions", mv("captions", 0)),
        ("distinct captions", mv("unique_captions", 0)),
        ("answers valid", mv("answers_valid_percent", 1, "%")),
        ("entropy first / last layer", f"{mv('entropy_first_layer_mean')} / {mv('entropy_last_layer_mean')}"),
        ("colour stops dominating at layer", mv("layer_colour_stops_dominating", 0)),
        ("median layer a caption settles", mv("median_layer_caption_settles", 1)),
    ]
    if "cider_d_last_layer" in metrics:
        headline.append(("CIDEr-D last layer vs refs", mv("cider_d_last_layer", 3)))
    sections = []
    if shares is not None:
        if shares.categories:
            inner = (f'<p class="note">Mean share of caption parts per category, per layer (from {_e(share_source)}). '
                     'Areas are stacked from the bottom in the order the legend lists them from the bottom up; '
                     'categories that peak earlier lie lower.</p>' + svg_img(svgs["category_share"], "category share per layer", "chart-categories"))
            rows = []
            for i, layer in enumerate(shares.layers):
                vals = [None if math.isnan(v) else float(v) for v in shares.values[i]]
                rows.append([layer, shares.n_captions[i]] + vals)

            def attrs(r, c):
                if c < 2:
                    return ""
                return (f' data-layer="{shares.layers[r]}" data-category="{_e(shares.categories[c - 2])}"'
                        f' data-value="{"" if rows[r][c] is None else repr(rows[r][c])}"')

            inner += ("<details><summary>the table (every category, percent)</summary>"
                      + table(["layer", "labelled captions"] + shares.categories, rows, "category-table", 0, attrs)
                      + "</details>")
        else:
            inner = '<p class="note">No caption has a valid labelled part: nothing to chart.</p>'
        sections.append(("categories", "Category share per layer", inner))
    else:
        sections.append(("categories", "Category share per layer",
                         '<p class="note">No labels given: run the categorize step and pass --labels.</p>'))
    lrows = _layer_rows(stats, shares)
    lhead = list(lrows[0])
    sections.append(("entropy", "Caption entropy per layer",
                     '<p class="note">Mean over the generated tokens of the entropy of the full next-token '
                     'distribution (bits), per caption; the bands show the spread over images.</p>'
                     + svg_img(svgs["entropy"], "caption entropy per layer", "chart-entropy")))
    dist_note = ('<p class="note">How far each layer\'s caption is from the last layer\'s: token F1 (mean over '
                 'images) and corpus BLEU-4' + (', and against the reference captions carried by the shards: '
                 'corpus BLEU-4 and CIDEr-D' if stats.cider_to_refs is not None else
                 ' (no reference captions in the inputs: pass --images with shards carrying json captions '
                 'for BLEU/CIDEr against them)') + '.</p>')
    sections.append(("distance", "Distance to the final caption",
                     dist_note + svg_img(svgs["distance_to_final"], "distance to the final caption", "chart-distance")
                     + svg_img(svgs["stays_close"], "first layer a caption stays close", "chart-settle")
                     + "<details open><summary>per-layer numbers</summary>"
                     + table(lhead, [list(r.values()) for r in lrows], "layer-table", 0) + "</details>"))
    counts = [
        ("images", f"{len(grid.image_keys):,}"), ("layers", ", ".join(map(str, grid.layers))),
        ("caption rows", f"{int((grid.rows >= 0).sum()):,}"),
        ("stop reasons", ", ".join(f"{k}: {v:,}" for k, v in Counter(grid.stops).most_common())),
    ]
    if inputs.labels is not None:
        counts.append(("labels rows (distinct captions)", f"{inputs.labels.num_rows:,}"))
        counts.append(("label status", ", ".join(f"{k}: {v:,}" for k, v in labels.status.most_common()) or "–"))
    if images is not None:
        counts.append(("thumbnails", f"{len(images.thumbnails):,}"))
        counts.append(("images with reference captions", f"{len(images.references):,}"))
    sections.append(("run", "How this run was made",
                     provenance_html(inputs.provenance, inputs.sources, counts, report_params)))
    browser_cats = [c for c in colours if chart is None or c not in chart.categories or c in shares.categories]
    data = browser_data(grid, stats, labels, browser_cats, colours, images)
    first_meta = (inputs.provenance.get("captions") or [{}])[0]
    model = first_meta.get("model") or (first_meta.get("parameters") or {}).get("model")
    subtitle = f"{len(grid.image_keys):,} images x {len(grid.layers)} layers"
    if model:
        pretrained = first_meta.get("pretrained") or (first_meta.get("parameters") or {}).get("pretrained")
        subtitle += f" · {model}" + (f" / {pretrained}" if pretrained else "")
    skipped = sum(len(find_skipped(m)) for ms in inputs.provenance.values() for m in ms)
    if skipped:
        subtitle += f" · {skipped} sample{'s' if skipped != 1 else ''} skipped (see the end)"
    return page(title=title, subtitle=subtitle, headline=headline, sections=sections,
                browser_data=data, warnings=warnings)

