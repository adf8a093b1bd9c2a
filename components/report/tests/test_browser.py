"""The page in a real browser: Debian's headless Chromium, no network features."""

from __future__ import annotations

import os
import time

import pytest

from tests.headless_chromium import CHROMIUM, Chromium, external_requests, pixels_vary

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} not installed (apt-get install -y chromium; CI installs it)",
)

READY = "window.__lverb && window.__lverb.ready"


def _search(b: Chromium, text: str) -> int:
    return b.search("search", "__lverb", text)


def test_reference_report_renders_searches_and_filters(browser, reference_report, tmp_path):
    out, result = reference_report
    b = browser
    b.open(os.path.join(out, "report.html"))
    b.wait_for(READY)
    # the charts (inline SVG images) decoded and have a size
    plots = b.eval("Array.from(document.querySelectorAll('img.plot')).map(i => [i.id, i.complete && i.naturalWidth])")
    assert len(plots) == 4 and all(w > 300 for _, w in plots), plots
    # the image browser: 20 images per page, 24 layers each, parts coloured, thumbnails decoded
    assert b.eval("document.querySelectorAll('#results .img-card').length") == 20
    assert b.eval("document.querySelectorAll('#results .img-card')[0].querySelectorAll('tr').length") == 24
    assert b.eval("document.querySelectorAll('#results span.part').length") > 500
    b.eval("document.getElementById('results').scrollIntoView(); 1")  # thumbnails load lazily
    b.wait_for("Array.from(document.querySelectorAll('#results .img-card img')).slice(0, 3)"
               ".every(i => i.complete && i.naturalWidth > 0)")
    assert b.eval("document.getElementById('count').textContent") == "500 of 500 images"
    b.eval("window.scrollTo(0, 0); 1")
    top = b.screenshot(str(tmp_path / "top.png"))
    assert pixels_vary(top) > 20

    # a search filters rows: only images with a matching caption remain, matches highlighted
    n = _search(b, "motorcycle")
    assert 0 < n < 500
    cards = b.eval("Array.from(document.querySelectorAll('#results .img-card')).map(c => c.textContent.toLowerCase())")
    assert len(cards) == min(n, 20) and all("motorcycle" in c for c in cards)
    hits = b.eval("Array.from(document.querySelectorAll('#results tr.hit')).map(r => r.textContent.toLowerCase())")
    assert hits and all("motorcycle" in h for h in hits)
    assert "q=motorcycle" in b.eval("location.hash")
    b.eval("document.getElementById('browser').scrollIntoView(); 1")
    shot = b.screenshot(str(tmp_path / "browser.png"))
    assert pixels_vary(shot) > 20

    # category filter (by the select) narrows further; layer filter shows one row per image
    cat = b.eval("window.__cat = Array.from(document.querySelectorAll('#category option')).find(o => o.textContent === 'animal').value")
    b.eval(f"var c = document.getElementById('category'); c.value = {cat!r}; c.dispatchEvent(new Event('change')); 1")
    n_animal = b.eval("window.__lverb.matches")
    assert 0 < n_animal <= n
    _search(b, "")
    b.eval("var l = document.getElementById('layer'); l.value = '23'; l.dispatchEvent(new Event('change')); 1")
    rows = b.eval("Array.from(document.querySelectorAll('#results .img-card')).map(c => c.querySelectorAll('tr').length)")
    assert rows and set(rows) == {1}
    assert b.eval("document.querySelector('#results tr').getAttribute('data-layer')") == "23"
    # paging
    b.eval("document.querySelector('.next').click(); 1")
    assert b.eval("document.querySelector('.pageinfo').textContent").startswith("page 2 of")
    assert b.errors == [], b.errors
    assert external_requests(b.requests) == []


def test_hostile_captions_render_as_text(browser, tmp_path):
    from latent_verbalizer.components.report.single.report import build_report
    from tests.small_report_inputs import HOSTILE, hostile_inputs

    caps, labels, aggregate = hostile_inputs(tmp_path)
    build_report([caps], labels, aggregate, str(tmp_path / "out"))
    b = browser
    b.open(str(tmp_path / "out" / "report.html"))
    b.wait_for(READY)
    shown = b.eval("Array.from(document.querySelectorAll('#results td.c')).map(td => td.textContent)")
    assert sorted(set(shown)) == sorted(set(HOSTILE))
    assert b.eval("document.querySelectorAll('#results img, #results svg, #results script, #results b').length") == 0
    assert b.errors == [], b.errors  # an alert() would have opened a dialog
    assert external_requests(b.requests) == []


@pytest.fixture(scope="module")
def big_report(reference_dir, tmp_path_factory):
    from latent_verbalizer.components.report.single.report import build_report
    from tests.reference_tables import write_reference_tables

    root = tmp_path_factory.mktemp("big")
    tables = write_reference_tables(str(root / "in"), repeat=20)  # 10,000 images x 24 layers
    t0 = time.perf_counter()
    result = build_report([tables["captions"]], tables["labels"], tables["aggregate"], str(root / "out"))
    return str(root / "out" / "report.html"), result, time.perf_counter() - t0


def test_ten_thousand_images_stay_responsive(browser, big_report, capsys):
    path, result, build_s = big_report
    assert result.metrics["images"] == 10000 and result.metrics["captions"] == 240000
    size_mb = os.path.getsize(path) / 1e6
    b = browser
    load_s = b.open(path)
    b.wait_for(READY)
    ready_ms = b.eval("window.__lverb.readyMs")
    assert b.eval("document.querySelectorAll('#results .img-card').length") == 20
    t0 = time.perf_counter()
    n = _search(b, "motorcycle")
    search_s = time.perf_counter() - t0
    render_ms = b.eval("window.__lverb.lastRenderMs")
    assert 0 < n < 10000
    b.eval("document.getElementById('size').value = '100'; document.getElementById('size').dispatchEvent(new Event('change')); 1")
    render100_ms = b.eval("window.__lverb.lastRenderMs")
    assert b.errors == [], b.errors
    with capsys.disabled():
        print(f"\n[report 10k] build {build_s:.1f}s, HTML {size_mb:.1f} MB, load event {load_s:.2f}s, "
              f"page ready {ready_ms:.0f} ms, search round trip {search_s:.2f}s "
              f"(render {render_ms:.0f} ms), 100 images x 24 layers rendered in {render100_ms:.0f} ms")
    assert size_mb < 15
    assert ready_ms < 10000 and render100_ms < 3000
