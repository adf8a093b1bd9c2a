"""The page's JavaScript and CSS: real files, linted by Biome, inlined into the one-file page."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from latent_verbalizer.components.report.assets import loader as page_assets
from latent_verbalizer.components.report.page.html import PageScript, page

REPO = Path(__file__).resolve().parents[3]
ASSETS = [Path(page_assets.__file__).with_name(name)
          for name in ("browser_common.js", "run_browser.js", "compare_browser.js", "grounding_overlay.js",
                       "page.css")]


def biome() -> str:
    """The Biome binary that `npm ci` (scripts/setup.sh) puts under node_modules."""
    local = REPO / "node_modules" / ".bin" / "biome"
    found = str(local) if local.exists() else shutil.which("biome")
    if not found:
        pytest.skip("Biome is not installed: run `npm ci` in the repository root (scripts/setup.sh does)")
    return found


def lint(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([biome(), "lint", "--max-diagnostics=50", *map(str, paths)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_page_js_and_css_pass_biome():
    result = lint(*ASSETS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_biome_catches_a_defect(tmp_path):
    """The lint above can fail: the same call fails on a script that compares with ``==``."""
    bad = tmp_path / "bad.js"
    bad.write_text("if (window.x) { var unused = 1; }\nfunction f(a) { return a == 1; }\n")
    result = lint(bad)
    assert result.returncode != 0 and "noDoubleEquals" in result.stdout + result.stderr


def test_assets_are_inlined_whole():
    html = page(title="t", subtitle="s", headline=[], sections=[], warnings=[],
                scripts=[PageScript("report-data", {"x": 1}, page_assets.page_js()),
                         PageScript("compare-data", {"y": 2}, page_assets.asset_text("compare_browser.js")),
                         PageScript("grounding-data", {"z": 3}, page_assets.asset_text("grounding_overlay.js"))])
    for path in ASSETS:
        text = path.read_text(encoding="utf-8")
        assert text.strip() and text in html, path.name
    assert '<script type="module">' in html and "<link" not in html and "src=\"run_browser.js" not in html
