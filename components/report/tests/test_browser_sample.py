"""A large run's page: its image browser embeds a fixed sample of the images, says so, and every
image's captions are written beside the page (image_captions.parquet)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from latent_verbalizer.components.report.page.browser_sample import browser_sample
from latent_verbalizer.components.report.single.report import build_report
from tests.page_parsing import embedded_data
from tests.small_report_inputs import write_caption_rows as _captions
from tests.small_report_inputs import write_categorized_rows as _categorized

WORDS = ["a red bus", "a dog on grass", "two people", "a blue car", "a cat"]


def _run(tmp_path, n_images: int = 40, n_layers: int = 3):
    rows = [(f"img-{i:03d}", layer, f"{WORDS[(i + layer) % len(WORDS)]} {i}" if layer == n_layers - 1
             else WORDS[(i + layer) % len(WORDS)]) for i in range(n_images) for layer in range(n_layers)]
    captions = _captions(rows, str(tmp_path / "c.parquet"))
    entries = [(c, [(c.split(" ")[1], ["color"]), (c.split(" ")[-1], ["object"])], "ok")
               for c in dict.fromkeys(r[2] for r in rows)]
    labels, aggregate = _categorized(rows, entries, tmp_path / "labels")
    return captions, labels, aggregate, rows


def test_the_sample_is_fixed_and_does_not_depend_on_order():
    keys = [f"k{i}" for i in range(1000)]
    chosen = browser_sample(keys, 100)
    assert len(chosen) == 100 and chosen == sorted(chosen)
    assert browser_sample(keys, 100) == chosen
    reordered = keys[::-1]
    assert {reordered[i] for i in browser_sample(reordered, 100)} == {keys[i] for i in chosen}
    # a key's rank is its own: the sample of a subset keeps the subset's images of the full sample
    half = keys[:500]
    assert {keys[i] for i in chosen if i < 500} <= {half[i] for i in browser_sample(half, 100)}
    assert browser_sample(keys, 2000) == list(range(1000)) and browser_sample(keys, None) == list(range(1000))
    with pytest.raises(ValueError, match="--browser-images 0"):
        browser_sample(keys, 0)


def test_a_large_run_embeds_a_sample_and_writes_every_image_beside_the_page(tmp_path):
    captions, labels, aggregate, rows = _run(tmp_path)
    result = build_report([captions], labels, aggregate, str(tmp_path / "out"), browser_images=10)
    data = embedded_data(result.html)
    keys = data["images"]["keys"]
    assert len(keys) == 10 and result.metrics["browser_images"] == 10 and result.metrics["images"] == 40
    assert len(data["images"]["cap"]) == 10 * 3 and len(data["images"]["settle"]) == 10
    assert 'id="browser-sample"' in result.html and "10 of the 40 images" in result.html
    assert "image_captions.parquet" in result.html
    # the embedded captions are the sampled images' own, with their parts located
    caption_of = {(key, layer): caption for key, layer, caption in rows}
    for n, key in enumerate(keys):
        for j in range(3):
            assert data["captions"][data["images"]["cap"][n * 3 + j]] == caption_of[(key, j)]
    assert all(spans for spans in data["spans"])
    # every (image, layer) is in the table beside the page, and it says which images the page holds
    table = pq.read_table(result.files["image_captions.parquet"])
    assert table.num_rows == len(rows)
    assert set(zip(table.column("image_key").to_pylist(), table.column("layer").to_pylist(),
                   table.column("caption").to_pylist())) == set(rows)
    in_page = {k for k, shown in zip(table.column("image_key").to_pylist(), table.column("in_page").to_pylist())
               if shown}
    assert in_page == set(keys)
    # the same sample at every build
    again = build_report([captions], labels, aggregate, str(tmp_path / "again"), browser_images=10)
    assert embedded_data(again.html)["images"]["keys"] == keys


def test_a_run_within_the_limit_embeds_every_image_and_says_nothing(tmp_path):
    captions, labels, aggregate, rows = _run(tmp_path, n_images=12)
    result = build_report([captions], labels, aggregate, str(tmp_path / "out"), browser_images=12)
    assert len(embedded_data(result.html)["images"]["keys"]) == 12 and 'id="browser-sample"' not in result.html
    table = pq.read_table(result.files["image_captions.parquet"])
    assert table.num_rows == len(rows) and all(table.column("in_page").to_pylist())
