"""Assemble the one-file HTML report: every text escaped, data as JSON safe inside <script>."""

from __future__ import annotations

import base64
import json
import math
from html import escape

from .page_assets import page_css, page_js

# No network at all: a page opened from an S3 console or KFP's artifact viewer fetches nothing.
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")


def json_for_script(obj) -> str:
    """JSON that cannot end its <script> element or open a comment: ``<``, ``>``, ``&`` and the
    two line separators JavaScript treats as newlines are written as \\u escapes."""
    s = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def svg_img(svg: bytes, alt: str, elem_id: str) -> str:
    b64 = base64.b64encode(svg).decode("ascii")
    return f'<img class="plot" id="{escape(elem_id)}" alt="{escape(alt)}" src="data:image/svg+xml;base64,{b64}">'


def fmt(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return escape(str(v))


def table(headers: list[str], rows: list[list], elem_id: str | None = None, text_cols: int = 1,
          cell_attrs=None) -> str:
    """An HTML table; every cell escaped. ``cell_attrs(r, c)`` may add data-* attributes."""
    idattr = f' id="{escape(elem_id)}"' if elem_id else ""
    head = "".join(f'<th class="{"t" if i < text_cols else ""}">{escape(str(h))}</th>' for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cells = []
        for c, v in enumerate(row):
            attrs = cell_attrs(r, c) if cell_attrs else ""
            cls = ' class="t"' if c < text_cols else ""
            cells.append(f"<td{cls}{attrs}>{fmt(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table class="data"{idattr}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def definition_list(items: list[tuple[str, str]]) -> str:
    return '<dl class="meta">' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in items) + "</dl>"


def cards(items: list[tuple[str, str]]) -> str:
    return '<div class="cards" id="headline">' + "".join(
        f'<div class="card"><div class="v">{escape(v)}</div><div class="k">{escape(k)}</div></div>' for k, v in items
    ) + "</div>"


def page(*, title: str, subtitle: str, headline: list[tuple[str, str]], sections: list[tuple[str, str, str]],
         browser_data: dict, warnings: list[str], method_note: str = "", method_deviation: bool = False) -> str:
    """``sections``: (id, heading, inner HTML already escaped) placed before the image browser.
    ``method_note``: a line under the title on how the captions were made (e.g. their precision);
    ``method_deviation`` marks it as a deviation from the study's method."""
    nav = "".join(f'<a href="#{escape(sid)}">{escape(h)}</a>' for sid, h, _ in sections if sid != "run")
    nav += '<a href="#browser">Images</a><a href="#run">How this run was made</a>'
    warn = "".join(f'<div class="warn">{escape(w)}</div>' for w in warnings)
    method = ""
    if method_note:
        marker = '<strong>Method deviation:</strong> ' if method_deviation else ""
        method = (f'<p id="method" class="method{" deviation" if method_deviation else ""}">'
                  f'{marker}{escape(method_note)}</p>')
    body = []
    for sid, heading, inner in sections:
        if sid == "run":
            continue
        body.append(f'<section id="{escape(sid)}"><h2>{escape(heading)}</h2>{inner}</section>')
    run = next((inner for sid, _, inner in sections if sid == "run"), "")
    browser = """
<section id="browser"><h2>Images</h2>
<p class="note">Every layer's caption of each image; caption parts are coloured by category (hover for the labels).
Right columns: caption entropy (bits per token) and token F1 against the last layer's caption.
Search matches caption text and image keys; click a category to filter; the address bar keeps the view (#q=...).</p>
<div class="controls">
 <input id="search" type="search" placeholder="search captions or image keys" aria-label="search">
 <label>category <select id="category"><option value="-1">any</option></select></label>
 <label>layer <select id="layer"><option value="-1">all</option></select></label>
 <label><input id="only" type="checkbox"> only matching layers</label>
 <label>per page <select id="size"><option>10</option><option>20</option><option>50</option><option>100</option></select></label>
 <span id="count"></span>
</div>
<div class="legend" id="legend"></div>
<div class="pager"><button class="prev" type="button">&larr; prev</button><span class="pageinfo"></span><button class="next" type="button">next &rarr;</button></div>
<div id="results"></div>
<div class="pager"><button class="prev" type="button">&larr; prev</button><span class="pageinfo"></span><button class="next" type="button">next &rarr;</button></div>
</section>"""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{page_css()}</style></head>
<body>
<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p>{method}</header>
<nav>{nav}</nav>
<main>
{warn}
{cards(headline)}
{''.join(body)}
{browser}
<section id="run"><h2>How this run was made</h2>{run}</section>
</main>
<script type="application/json" id="report-data">{json_for_script(browser_data)}</script>
<script type="module">{page_js()}</script>
</body></html>
"""
