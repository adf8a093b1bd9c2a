"""The caption maps (issue #21) in a real browser (Debian's headless Chromium): drawn over the
thumbnails of the single run's browser for the selected layer, both runs' side by side in the
comparison's, and a page without maps as it was. The maps are blobs whose peak patch the test knows
(grounded_tables.blob_centre), so where the canvas peaks says the right map is drawn."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from latent_verbalizer.components.common.contracts import CAPTIONS_FORMAT, CAPTIONS_SCHEMA, CAPTIONS_VERSION
from latent_verbalizer.components.common.tables import provenance, write_table
from tests.grounded_tables import (
    blob_centre,
    blob_maps,
    with_maps,
    write_grounded_captions,
    write_grounded_run,
)
from tests.headless_chromium import CHROMIUM, Chromium
from tests.headless_chromium import external_requests as _external
from tests.headless_chromium import pixels_vary as _pixels_vary
from tests.images import shard_with_references as make_shard
from tests.run_layouts import (
    blip_parameters,
    caption_rows,
    write_captions,
    write_labels,
)

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} not installed (apt-get install -y chromium; CI installs it)",
)

READY = "window.__lverb && window.__lverb.ready"
COMPARE_READY = "window.__lverbCompare && window.__lverbCompare.ready"
KEYS = [f"img{i:03d}" for i in range(6)]
GRID_A, LAYERS_A = (7, 7), 4        # CoCa: the map covers the thumbnail's centre square
GRID_B, LAYERS_B = (4, 4), 2        # BLIP: the map covers all of it
COCA = {"model": "coca_ViT-L-14", "pretrained": "laion2b", "precision": "fp32"}

# (row, col) of the patch where a canvas peaks (its most opaque pixel)
PEAK = """(c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let best = -1, at = -1;
  for (let p = 0; p < d.length / 4; p++) { if (d[4 * p + 3] > best) { best = d[4 * p + 3]; at = p; } }
  return [Math.floor(at / c.width), at % c.width, c.width, c.height]; })"""
RECTS = """(el => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })"""


def _captions(n_layers: int, run: str = "a"):
    rows = [(k, layer, f"{run}: thing {i} seen at block {layer}") for i, k in enumerate(KEYS) for layer in range(n_layers)]
    return caption_rows(rows)


def _category_labels(captions):
    return [(c, [("thing", ["object"])], "ok") for c in dict.fromkeys(captions.column("caption").to_pylist())]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The six images (320 x 240 drawings) in one webdataset shard."""
    root = tmp_path_factory.mktemp("grounding-shards")
    return make_shard(str(root / "shard-000000.tar"), KEYS, {}, None)


@pytest.fixture(scope="module")
def browser():
    with Chromium() as b:
        yield b


def _canvas_peak(b: Chromium, card: int, pane: int = 0):
    return b.eval(f"{PEAK}(document.querySelectorAll('#results .img-card, #cmp-results .img-card')[{card}]"
                  f".querySelectorAll('canvas.gmap-canvas')[{pane}])")


def _thumbnail_region(path: str, rect: list[float]) -> np.ndarray:
    left, top, width, height = (int(round(v)) for v in rect)
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=float)[top:top + height, left:left + width]


def test_single_page_draws_the_selected_layers_map_over_the_thumbnail(browser, shards, tmp_path):
    from latent_verbalizer.components.report.single.report import build_report

    captions = _captions(LAYERS_A)
    uri = write_grounded_captions(str(tmp_path / "captions.parquet"),
                                  with_maps(captions, blob_maps(captions, GRID_A, LAYERS_A)), GRID_A, COCA)
    build_report([uri], None, None, str(tmp_path / "out"), shards)
    b = browser
    b.open(str(tmp_path / "out" / "report.html"))
    b.wait_for(READY)
    assert b.eval("document.getElementById('grounding-toggle').checked") is True
    b.eval("document.getElementById('results').scrollIntoView(); 1")  # thumbnails load lazily
    b.wait_for("Array.from(document.querySelectorAll('#results .img-card img')).every(i => i.complete && i.naturalWidth > 0)")
    assert b.eval("document.querySelectorAll('#results canvas.gmap-canvas').length") == len(KEYS)
    # all layers listed: each card shows its last layer's map, peaked where that map peaks
    assert b.eval("Array.from(document.querySelectorAll('#results .img-card')).map(c => c.getAttribute('data-map-layer'))") \
        == ["3"] * len(KEYS)
    for i in range(len(KEYS)):
        assert _canvas_peak(b, i) == [*blob_centre(GRID_A, i, 3, LAYERS_A), GRID_A[1], GRID_A[0]]
    assert b.eval("document.querySelector('#results .gmap-label').textContent").startswith("L3 map · top 10%: ")
    # the map covers the centre square of the 4:3 thumbnail (what the CoCa transform crops)
    img = b.eval(f"{RECTS}(document.querySelector('#results .img-card img'))")
    canvas = b.eval(f"{RECTS}(document.querySelector('#results canvas.gmap-canvas'))")
    assert img[2] > img[3] > 50
    assert canvas == pytest.approx([img[0] + (img[2] - img[3]) / 2, img[1], img[3], img[3]], abs=1.0)
    shot_on = b.screenshot(str(tmp_path / "grounding-single.png"))
    assert _pixels_vary(shot_on) > 20

    # the pointer on a caption shows that caption's layer's map
    b.eval("document.querySelector('#results .img-card tr[data-layer=\"1\"]').dispatchEvent(new Event('mouseenter')); 1")
    assert b.eval("document.querySelector('#results .img-card').getAttribute('data-map-layer')") == "1"
    assert _canvas_peak(b, 0)[:2] == list(blob_centre(GRID_A, 0, 1, LAYERS_A))
    b.eval("document.querySelector('#results .img-card tr[data-layer=\"3\"]').dispatchEvent(new Event('mouseenter')); 1")

    # the toggle hides the maps and leaves the thumbnails
    b.eval("var t = document.getElementById('grounding-toggle'); t.checked = false; t.dispatchEvent(new Event('change')); 1")
    assert b.eval("getComputedStyle(document.querySelector('#results canvas.gmap-canvas')).display") == "none"
    shot_off = b.screenshot(str(tmp_path / "grounding-single-off.png"))
    on, off = _thumbnail_region(shot_on, img), _thumbnail_region(shot_off, img)
    assert off.std() > 20 and np.abs(on - off).mean() > 5   # the image is there, and the map changed it
    b.eval("var t = document.getElementById('grounding-toggle'); t.checked = true; t.dispatchEvent(new Event('change')); 1")

    # a selected layer: that layer's map on every card
    b.eval("var l = document.getElementById('layer'); l.value = '0'; l.dispatchEvent(new Event('change')); 1")
    assert b.eval("Array.from(document.querySelectorAll('#results .img-card')).map(c => c.getAttribute('data-map-layer'))") \
        == ["0"] * len(KEYS)
    assert [_canvas_peak(b, i)[:2] for i in range(len(KEYS))] == [list(blob_centre(GRID_A, i, 0, LAYERS_A))
                                                                 for i in range(len(KEYS))]
    assert b.errors == [], b.errors
    assert _external(b.requests) == []


def test_a_page_without_maps_has_no_overlay(browser, shards, tmp_path):
    from latent_verbalizer.components.report.single.report import build_report

    uri = str(tmp_path / "captions.parquet")
    write_table(uri, _captions(LAYERS_A), CAPTIONS_SCHEMA, CAPTIONS_FORMAT, CAPTIONS_VERSION, provenance(**COCA))
    build_report([uri], None, None, str(tmp_path / "out"), shards)
    b = browser
    b.open(str(tmp_path / "out" / "report.html"))
    b.wait_for(READY)
    assert b.eval("typeof window.__lverbGrounding") == "undefined"
    assert b.eval("document.querySelectorAll('#grounding-toggle, canvas, .gmap-frame, .gmap-note, #grounding').length") == 0
    assert b.eval("Array.from(document.querySelectorAll('#results .img-card')).map(c => c.querySelectorAll('tr').length)") \
        == [LAYERS_A] * len(KEYS)
    # the card as before: the thumbnail straight in the side column, then the key
    assert b.eval("Array.from(document.querySelector('#results .img-card .side').children).map(e => e.tagName + '.' + e.className)") \
        == ["IMG.", "DIV.key", "DIV.", "DIV."]
    b.eval("var l = document.getElementById('layer'); l.value = '2'; l.dispatchEvent(new Event('change')); 1")
    assert b.eval("document.querySelector('#results tr').getAttribute('data-layer')") == "2"
    assert b.errors == [], b.errors


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Run A: CoCa, 4 blocks, maps on 7 x 7; run B: BLIP, 2 layers, maps on 4 x 4; run C: BLIP without maps."""
    root = tmp_path_factory.mktemp("grounding-runs")
    runs = {}
    for name, n_layers, grid, params in (("a", LAYERS_A, GRID_A, COCA), ("b", LAYERS_B, GRID_B, blip_parameters(2)),
                                         ("c", LAYERS_B, None, blip_parameters(2))):
        prefix = str(root / f"run-{name}")
        captions = _captions(n_layers, name)
        if grid:
            write_grounded_run(prefix, with_maps(captions, blob_maps(captions, grid, n_layers)), grid, params)
        else:
            write_captions(prefix, captions, params)
        write_labels(prefix, captions, _category_labels(captions), {"object": "object"})
        runs[name] = prefix
    return runs


def test_compare_page_shows_both_runs_maps_side_by_side(browser, shards, two_runs, tmp_path):
    from latent_verbalizer.components.report.compare.report import build_compare_report

    build_compare_report(two_runs["a"], two_runs["b"], str(tmp_path / "out"), shards)
    b = browser
    b.open(str(tmp_path / "out" / "report.html"))
    b.wait_for(COMPARE_READY)
    assert b.eval("document.getElementById('cmp-grounding-toggle').checked") is True
    b.eval("document.getElementById('cmp-results').scrollIntoView(); 1")
    b.wait_for("Array.from(document.querySelectorAll('#cmp-results .gmap-pane img')).every(i => i.complete && i.naturalWidth > 0)")
    n_cards = b.eval("document.querySelectorAll('#cmp-results .img-card').length")
    assert n_cards == 5  # the compare browser's page size
    assert b.eval("Array.from(document.querySelectorAll('#cmp-results .img-card')).map(c => "
                  "Array.from(c.querySelectorAll('.gmap-run')).map(e => e.textContent))") \
        == [["A: coca_ViT-L-14", "B: hf:tiny-blip"]] * n_cards
    # first the deepest row: A's block 3 beside B's layer 2 (0-based 1), each on its own grid
    for i in range(n_cards):
        assert _canvas_peak(b, i, 0) == [*blob_centre(GRID_A, i, 3, LAYERS_A), GRID_A[1], GRID_A[0]]
        assert _canvas_peak(b, i, 1) == [*blob_centre(GRID_B, i, 1, LAYERS_B), GRID_B[1], GRID_B[0]]
    labels = b.eval("Array.from(document.querySelectorAll('#cmp-results .img-card')[0].querySelectorAll('.gmap-label'))"
                    ".map(e => e.textContent)")
    assert labels[0].startswith("block 3 · top 10%: ") and labels[1].startswith("encoder layer 2 · top 10%: ")
    # A's map on the centre square of its thumbnail, B's (BLIP resizes the whole image) on all of it
    card = "document.querySelectorAll('#cmp-results .img-card')[0]"
    img_a, img_b = (b.eval(f"{RECTS}({card}.querySelectorAll('.gmap-pane img')[{n}])") for n in (0, 1))
    canvas_a, canvas_b = (b.eval(f"{RECTS}({card}.querySelectorAll('canvas.gmap-canvas')[{n}])") for n in (0, 1))
    assert canvas_a == pytest.approx([img_a[0] + (img_a[2] - img_a[3]) / 2, img_a[1], img_a[3], img_a[3]], abs=1.0)
    assert canvas_b == pytest.approx(img_b, abs=1.0)
    assert canvas_b[0] > canvas_a[0] + canvas_a[2]   # side by side
    assert b.eval(f"getComputedStyle({card}.querySelector('.side > img')).display") == "none"  # the pair replaces it
    b.eval(f"{card}.scrollIntoView(); 1")
    assert _pixels_vary(b.screenshot(str(tmp_path / "grounding-compare.png"))) > 20

    # the pointer on the depth-0.5 row: A's block 1 beside B's layer 1 (0-based 0); at depth 0.25 B has no layer
    b.eval(f"{card}.querySelector('tr[data-depth=\"0.5\"]').dispatchEvent(new Event('mouseenter')); 1")
    assert _canvas_peak(b, 0, 0)[:2] == list(blob_centre(GRID_A, 0, 1, LAYERS_A))
    assert _canvas_peak(b, 0, 1)[:2] == list(blob_centre(GRID_B, 0, 0, LAYERS_B))
    b.eval(f"{card}.querySelector('tr[data-depth=\"0.25\"]').dispatchEvent(new Event('mouseenter')); 1")
    assert b.eval(f"{card}.querySelectorAll('canvas.gmap-canvas')[1].hidden") is True
    assert b.eval(f"{card}.querySelectorAll('.gmap-label')[1].textContent") == "no layer at this depth"
    assert _canvas_peak(b, 0, 0)[:2] == list(blob_centre(GRID_A, 0, 0, LAYERS_A))

    # the toggle: back to the one thumbnail
    b.eval("var t = document.getElementById('cmp-grounding-toggle'); t.checked = false; t.dispatchEvent(new Event('change')); 1")
    assert b.eval(f"getComputedStyle({card}.querySelector('.gmap-pair')).display") == "none"
    assert b.eval(f"getComputedStyle({card}.querySelector('.side > img')).display") == "block"
    assert b.errors == [], b.errors
    assert _external(b.requests) == []


def test_compare_with_a_run_without_maps_names_it(browser, shards, two_runs, tmp_path):
    from latent_verbalizer.components.report.compare.report import build_compare_report

    build_compare_report(two_runs["a"], two_runs["c"], str(tmp_path / "out"), shards)
    b = browser
    b.open(str(tmp_path / "out" / "report.html"))
    b.wait_for(COMPARE_READY)
    card = "document.querySelectorAll('#cmp-results .img-card')[0]"
    assert b.eval(f"Array.from({card}.querySelectorAll('.gmap-run')).map(e => e.textContent)") \
        == ["A: coca_ViT-L-14", "B: no maps in this run"]
    assert b.eval(f"Array.from({card}.querySelectorAll('canvas.gmap-canvas')).map(c => c.hidden)") == [False, True]
    assert b.errors == [], b.errors
