"""The comparison in a real browser (Debian's headless Chromium): the study's 24-layer captions
(run A) against a 12-block run of another model's numbering (run B: every other layer,
re-labelled), on different but overlapping images."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tests.headless_chromium import CHROMIUM, Chromium, external_requests, pixels_vary
from tests.run_layouts import blip_parameters, write_captions, write_labels

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} not installed (apt-get install -y chromium; CI installs it)",
)

READY = "window.__lverbCompare && window.__lverbCompare.ready"
A_IMAGES, B_IMAGES = range(0, 30), range(15, 45)   # 15 shared: 000015 .. 000029


@pytest.fixture(scope="module")
def runs(reference_dir, tmp_path_factory):
    from tests import reference_tables as ref

    caps, ents, answers = ref.load_reference()
    mapping = ref.merge_map()
    root = tmp_path_factory.mktemp("compare-runs")
    a, b = str(root / "run-a"), str(root / "run-b")
    captions_a = ref.captions_table(caps, ents, n_images=len(A_IMAGES))
    write_captions(a, captions_a, {"model": ref.MODEL, "pretrained": ref.PRETRAINED, "precision": "fp32"})
    write_labels(a, captions_a, ref.labels_table(caps, answers, len(A_IMAGES)), mapping)
    # B: block j is the study's layer 2j, images 15..44, as a 12-block model that records its numbering
    even = list(range(0, 24, 2))
    every = ref.captions_table(caps, ents, n_images=B_IMAGES.stop, layers=even)
    keys = pa.array([f"{i:06d}" for i in B_IMAGES])
    captions_b = every.filter(pc.is_in(every.column("image_key"), value_set=keys))
    captions_b = captions_b.set_column(2, "layer", pc.divide(captions_b.column("layer"), 2))
    write_captions(b, captions_b, blip_parameters(12))
    write_labels(b, captions_b, ref.labels_table(caps, answers, B_IMAGES.stop, even), mapping)
    return {"a": a, "b": b, "caps": caps}


def _search(b: Chromium, text: str) -> int:
    return b.search("cmp-search", "__lverbCompare", text)


CELLS = """Array.from(document.querySelectorAll('#cmp-results .img-card')[0].querySelectorAll('tr[data-depth]'))
  .map(r => [r.getAttribute('data-depth'), Array.from(r.children).map(td => td.textContent)])"""


def test_compare_page_shows_both_runs_side_by_side(browser, runs, reference_shards, tmp_path):
    from latent_verbalizer.components.report.compare.report import build_compare_report

    r = build_compare_report(runs["a"], runs["b"], str(tmp_path / "out"), reference_shards["pattern"])
    b = browser
    b.open(str(tmp_path / "out" / "report.html"))
    b.wait_for(READY)
    plots = b.eval("Array.from(document.querySelectorAll('img.plot')).map(i => [i.id, i.complete && i.naturalWidth])")
    assert len(plots) == 3 and all(w > 300 for _, w in plots), plots
    assert b.eval("document.getElementById('cmp-count').textContent") == "15 of 15 shared images"
    assert "15 images both runs captioned; 15 only in A (coca_ViT-L-14), 15 only in B (hf:tiny-blip)" in b.eval(
        "document.getElementById('compare-image-counts').textContent")

    # the first shared image: 24 rows by depth (B's 12 depths are among A's), each run labelled by its numbering
    assert b.eval("document.querySelectorAll('#cmp-results .img-card')[0].getAttribute('data-key')") == "000015"
    rows = {depth: cells for depth, cells in b.eval(CELLS)}
    caps = runs["caps"]
    assert len(rows) == 24
    depth_1 = rows["1"]  # [depth, A label, A caption, A entropy, B label, B caption, B entropy]
    assert depth_1[1:3] == ["block 23", caps["layer_23"][15]]
    assert depth_1[4:6] == ["encoder layer 12", caps["layer_22"][15]]
    assert rows["0.5"][1:3] == ["block 11", caps["layer_11"][15]] and rows["0.5"][4:6] == ["encoder layer 6",
                                                                                           caps["layer_10"][15]]
    assert rows["0.0417"][4:6] == ["", ""]  # depth 1/24: B has no block there
    assert b.eval("document.querySelectorAll('#cmp-results span.part').length") > 50
    b.eval("document.getElementById('cmp-results').scrollIntoView(); 1")
    assert b.eval("document.querySelectorAll('#cmp-results .img-card img').length") == 5  # thumbnails (page of 5)
    b.wait_for("Array.from(document.querySelectorAll('#cmp-results .img-card img')).slice(0, 1)"
               ".every(i => i.complete && i.naturalWidth > 0)")  # the first in view has loaded
    assert pixels_vary(b.screenshot(str(tmp_path / "compare.png"))) > 20

    # search over both runs' captions; a category filter narrows
    word = caps["layer_23"][20].split()[1]
    n = _search(b, word)
    assert 1 <= n <= 15
    texts = b.eval("Array.from(document.querySelectorAll('#cmp-results .img-card')).map(c => c.textContent.toLowerCase())")
    assert texts and all(word.lower() in t for t in texts)
    assert b.eval("document.querySelectorAll('#cmp-results tr.hit').length") > 0
    _search(b, "")
    b.eval("var c = document.getElementById('cmp-category'); c.value = String(Array.from(c.options)"
           ".findIndex(o => o.textContent === 'animal') - 1); c.dispatchEvent(new Event('change')); 1")
    assert 0 < b.eval("window.__lverbCompare.matches") <= 15
    b.eval("document.querySelector('.cmp-next').click(); 1")
    assert b.errors == [], b.errors
    assert external_requests(b.requests) == []
    assert r.metrics["compare_layers_a"] == 24 and r.metrics["compare_layers_b"] == 12


def test_a_runs_report_with_a_second_run_keeps_both_browsers_working(browser, runs, tmp_path):
    from latent_verbalizer.components.report.single.report import build_report

    a = runs["a"]
    build_report(f"{a}/captions", f"{a}/labels/labels.parquet", f"{a}/labels/aggregate.parquet",
                 str(tmp_path / "out"), compare_with=runs["b"])
    b = browser
    b.open(str(tmp_path / "out" / "report.html"))
    b.wait_for("window.__lverb && window.__lverb.ready")
    b.wait_for(READY)
    assert b.eval("document.querySelectorAll('#results .img-card').length") == 20
    assert b.eval("document.querySelectorAll('#cmp-results .img-card').length") == 5
    # each browser's category chips belong to it: a click in one leaves the other's untouched
    b.eval("document.querySelector('#legend .chip').click(); 1")
    assert b.eval("document.querySelectorAll('#legend .chip.on').length") == 1
    assert b.eval("document.querySelectorAll('#cmp-legend .chip.on').length") == 0
    assert b.eval("document.querySelectorAll('img.plot').length") == 7
    assert b.errors == [], b.errors
    assert external_requests(b.requests) == []
