"""Assemble the one-file HTML report: every text escaped, data as JSON safe inside <script>."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from ..assets.loader import asset_text, page_css

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


def browser_controls(prefix: str, sizes: tuple[int, ...], extra: str = "", search_label: str = "search") -> str:
    """The controls an image browser's script wires up (``browser_common.js``), every id and pager class
    prefixed with ``prefix``: search box, category select, ``extra`` controls, page size, count, legend,
    and a pager above and below the results."""
    pager = (f'<div class="pager"><button class="{prefix}prev" type="button">&larr; prev</button><span '
             f'class="{prefix}pageinfo"></span><button class="{prefix}next" type="button">next &rarr;</button></div>')
    sizes_html = "".join(f"<option>{n}</option>" for n in sizes)
    return f"""<div class="controls">
 <input id="{prefix}search" type="search" placeholder="search captions or image keys" aria-label="{search_label}">
 <label>category <select id="{prefix}category"><option value="-1">any</option></select></label>
{extra} <label>per page <select id="{prefix}size">{sizes_html}</select></label>
 <span id="{prefix}count"></span>
</div>
<div class="legend" id="{prefix}legend"></div>
{pager}
<div id="{prefix}results"></div>
{pager}"""


SINGLE_BROWSER = """<p class="note">Every layer's caption of each image; caption parts are coloured by category (hover for the labels).
Right columns: caption entropy (bits per token) and token F1 against the last layer's caption.
Search matches caption text and image keys; click a category to filter; the address bar keeps the view (#q=...).</p>
""" + browser_controls("", (10, 20, 50, 100), """ <label>layer <select id="layer"><option value="-1">all</option></select></label>
 <label><input id="only" type="checkbox"> only matching layers</label>
""")


@dataclass
class PageScript:
    """Data embedded as JSON (``<script type="application/json" id=data_id>``) and the module script reading it."""

    data_id: str
    data: dict
    js: str


def method_line(note: str, deviation: bool, elem_id: str = "method") -> str:
    """A line under the title on how captions were made; a deviation from the study's method is marked."""
    marker = '<strong>Method deviation:</strong> ' if deviation else ""
    return f'<p id="{escape(elem_id)}" class="method{" deviation" if deviation else ""}">{marker}{escape(note)}</p>'


def page(*, title: str, subtitle: str, headline: list[tuple[str, str]], sections: list[tuple[str, str, str]],
         warnings: list[str], scripts: list[PageScript], method_notes: Sequence[tuple[str, bool]] = ()) -> str:
    """``sections``: (id, heading, inner HTML already escaped), in page order (the nav lists them).
    ``method_notes``: (text, deviation) lines under the title on how the captions were made."""
    nav = "".join(f'<a href="#{escape(sid)}">{escape(h)}</a>' for sid, h, _ in sections)
    warn = "".join(f'<div class="warn">{escape(w)}</div>' for w in warnings)
    method = "".join(method_line(note, deviation, "method" if i == 0 else f"method-{i + 1}")
                     for i, (note, deviation) in enumerate(method_notes) if note)
    body = "".join(f'<section id="{escape(sid)}"><h2>{escape(heading)}</h2>{inner}</section>'
                   for sid, heading, inner in sections)
    data = "".join(f'<script type="application/json" id="{escape(s.data_id)}">{json_for_script(s.data)}</script>'
                   for s in scripts)
    # the helpers both browsers share, as a classic script: it runs before the (deferred) module scripts
    shared = f'<script>{asset_text("browser_common.js")}</script>' if scripts else ""
    code = shared + "".join(f'<script type="module">{s.js}</script>' for s in scripts)
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
{body}
</main>
{data}
{code}
</body></html>
"""
