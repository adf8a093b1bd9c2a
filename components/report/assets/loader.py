"""The report page's CSS and JavaScript: real files shipped as package data (``page.css``,
``page.js``, linted by Biome: ``npm run lint``), read here to be inlined into the page."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def asset_text(name: str) -> str:
    """The text of a file shipped next to this module (``page.css`` or ``page.js``).

    Inlined as it is, so it must not close its own element."""
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    if "</script" in text.lower() or "</style" in text.lower():
        raise ValueError(f"{name}: contains '</script' or '</style', which would end its element in the page")
    return text


def page_css() -> str:
    return asset_text("page.css")


def page_js() -> str:
    return asset_text("run_browser.js")
