"""The Markdown summary (rendered by the KFP UI, raw HTML allowed) shows data text as written:
model names, tags, precision, warnings, category and status names never become markup."""

from __future__ import annotations

from html import unescape

import pytest
from markdown_it import MarkdownIt

from latent_verbalizer.components.report.page.markdown_text import md_text
from latent_verbalizer.components.report.single.report import build_report
from tests.small_report_inputs import HOSTILE, write_caption_rows, write_categorized_rows

MODEL = "**m** <img src=x onerror=alert(1)> [x](javascript:alert(2))"
PRECISION = "<script>alert(3)</script>"


def rendered(markdown: str) -> str:
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)  # raw HTML on, as in the KFP UI


def test_data_text_stays_text_in_the_rendered_summary(tmp_path):
    rows = [(f"k{i}", layer, HOSTILE[(i + layer) % len(HOSTILE)]) for i in range(3) for layer in range(2)]
    caps = write_caption_rows(rows, str(tmp_path / "c.parquet"), model=MODEL, pretrained="random", precision=PRECISION)
    labels, aggregate = write_categorized_rows(rows, [
        (HOSTILE[0], [("a", ["<b>evil label</b>"])], "ok"),
        (HOSTILE[1], [("b", ["<b>evil label</b>"])], "ok"),
        (HOSTILE[2], [("c", ["<b>evil label</b>"])], "<i>flag</i>"),
        (HOSTILE[3], [("d", ["<b>evil label</b>"])], "ok"),
    ], tmp_path)
    r = build_report([caps], labels, aggregate, str(tmp_path / "out"))
    html = rendered(r.markdown)
    for bad in ("<img", "<script", "<b>", "<i>", "<a ", "<em>m"):
        assert bad not in html, bad
    assert html.count("<strong>") == 2, "only our own bold: the method deviation and the random-weights note"
    text = unescape(html)
    assert "RANDOM WEIGHTS: " + MODEL in text          # the model name, as written
    assert PRECISION in text                             # the precision from the metadata
    assert "<b>evil label</b>" in text and "<i>flag</i>" in text  # category and status flag names


@pytest.mark.parametrize("value", ["a|b", "# heading", "x\n- item", "_em_ and *em*", "a & <b>", "`code`", "\\*"])
def test_md_text_renders_as_the_same_text(value):
    html = rendered(f"| c |\n| --- |\n| {md_text(value)} |\n\nline {md_text(value)}")
    assert html.count("<td>") == 1 and "<h1>" not in html and "<li>" not in html and "<em>" not in html
    assert "<code>" not in html
    assert unescape(html).count(" ".join(value.splitlines())) == 2
