"""Read back what a report page holds (test helper)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser


def embedded_data(html: str, elem_id: str = "report-data") -> dict:
    """The JSON a page embeds for its script: the image browser's (``report-data``) or the comparison's (``compare-data``)."""
    m = re.search(rf'<script type="application/json" id="{elem_id}">(.*?)</script>', html, re.S)
    assert m, f"no {elem_id} script in the page"
    return json.loads(m.group(1))


class _CellParser(HTMLParser):
    def __init__(self, table_id: str):
        super().__init__()
        self.table_id, self.inside, self.cells = table_id, False, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id") == self.table_id:
            self.inside = True
        elif tag == "td" and self.inside and "data-category" in a:
            self.cells.append(a)

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False


def category_cells(html: str) -> dict[tuple[int, str], float | None]:
    """(layer, category) -> share in percent, from the page's category table."""
    p = _CellParser("category-table")
    p.feed(html)
    return {(int(c["data-layer"]), c["data-category"]): (float(c["data-value"]) if c["data-value"] else None)
            for c in p.cells}
