"""Text from the data (model names, tags, warnings, category names) made inert in Markdown.

The KFP UI renders a step's Markdown output and lets raw HTML through; a model name such
as ``<img src=x onerror=...>`` or ``**x**`` must show as written, never as markup.
"""

from __future__ import annotations

import re

_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# ``_`` inside a word (snake_case names) never emphasises: left as written
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*{}\[\]()#+!|~]|_(?![A-Za-z0-9])|(?<![A-Za-z0-9])_)")


def md_text(value) -> str:
    """``value`` as literal Markdown text: HTML characters as entities, Markdown punctuation
    backslash-escaped, line breaks as spaces (a line break could start a heading or a list)."""
    text = " ".join(str(value).splitlines())
    text = _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)
    return "".join(_HTML.get(ch, ch) for ch in text)
