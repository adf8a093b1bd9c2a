"""The report built from the study's real captions, entropies and LLM answers."""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from latent_verbalizer.components.report.single.report import build_report
from tests.page_parsing import category_cells, embedded_data


def _aggregate(path) -> dict[tuple[int, str], float]:
    return {(r["layer"], r["category"]): r["share_percent"] for r in pq.read_table(path).to_pylist()}


def test_category_table_matches_aggregate_and_sums_to_100(reference_tables, reference_report):
    out, result = reference_report
    want = _aggregate(reference_tables["aggregate"])
    # the CSV written next to the page
    with open(os.path.join(out, "category_share.csv")) as f:
        rows = list(csv.DictReader(f))
    got = {(int(r["layer"]), r["category"]): float(r["share_percent"]) for r in rows}
    cats = {c for _, c in want}
    for layer in range(24):
        for c in cats:
            assert got[(layer, c)] == pytest.approx(want.get((layer, c), 0.0), abs=1e-9)
    # the table inside the page
    cells = category_cells(result.html)
    assert set(cells) == set(got)
    for k, v in cells.items():
        assert v == pytest.approx(got[k], abs=1e-9)
    # the chart's areas: every layer sums to 100 (small categories grouped, none dropped)
    per_layer = defaultdict(float)
    for (layer, _), v in got.items():
        per_layer[layer] += v
    assert sorted(per_layer) == list(range(24))
    for layer, total in per_layer.items():
        assert total == pytest.approx(100.0, abs=1e-6), layer
    assert not any("do not sum to 100" in w for w in result.markdown.splitlines())


def test_category_table_is_close_to_the_studys_table(reference_dir, reference_report):
    """The study's published table covers 5,000 images; its raw answers here cover 500:
    the same method lands within about 2 points (README of the reference data)."""
    out, _ = reference_report
    with open(os.path.join(out, "category_share.csv")) as f:
        ours = {(int(r["layer"]), r["category"]): float(r["share_percent"]) for r in csv.DictReader(f)}
    with open(reference_dir / "classification_data.csv") as f:
        study = list(csv.DictReader(f))
    worst = max(abs(float(v) - ours.get((i, c), 0.0)) for i, row in enumerate(study) for c, v in row.items())
    assert worst < 2.5


def test_metrics_markdown_and_files(reference_tables, reference_report):
    out, result = reference_report
    m = result.metrics
    assert m["images"] == 500 and m["layers"] == 24 and m["captions"] == 12000
    assert m["unique_captions"] == len(set(pq.read_table(reference_tables["captions"]).column("caption").to_pylist()))
    # 169 of 12,000 raw answers do not parse (the first answer of a caption wins, then counts at every occurrence)
    assert 97.0 < m["captions_in_shares_percent"] < 99.5
    assert m["answers_ok"] + m["answers_unparseable"] + m.get("answers_no_parts", 0) == m["unique_captions"]
    assert m["entropy_first_layer_mean"] > 6 > 3 > m["entropy_last_layer_mean"]
    assert 5 <= m["layer_colour_stops_dominating"] <= 16
    assert m["images_with_references"] == 24
    assert m["cider_d_last_layer"] > 1.0  # pseudo-references include the last layer's own caption
    assert all(isinstance(v, float) and np.isfinite(v) for v in m.values())
    assert json.load(open(os.path.join(out, "metrics.json"))) == m
    assert open(os.path.join(out, "summary.md")).read() == result.markdown
    assert "500 images x 24 layers" in result.markdown
    assert "colour stops" in result.markdown
    for name in ("category_share", "entropy", "distance_to_final", "stays_close"):
        with Image.open(os.path.join(out, "plots", f"{name}.png")) as im:
            assert im.size[0] > 800 and np.asarray(im.convert("L")).std() > 10
        svg = open(os.path.join(out, "plots", f"{name}.svg"), "rb").read()
        assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg
    assert os.path.exists(os.path.join(out, "layer_stats.csv"))


def test_page_is_self_contained_and_explains_the_run(reference_report):
    _, result = reference_report
    html = result.html
    assert 'http-equiv="Content-Security-Policy"' in html and "default-src 'none'" in html
    for bad in ('src="http', "src='http", 'href="http', "url(http", "@import", "<link"):
        assert bad not in html
    # provenance from the tables' metadata: models, parameters, versions, skipped samples
    for text in ("coca_ViT-L-14", "mscoco_finetuned_laion2B-s13B-b90k", "meta-llama/Llama-3.1-70B-Instruct",
                 "package_version", "000123-broken", "image decode failed", "unparseable",
                 "captions decoded in fp32"):
        assert text in html, text
    data = embedded_data(html)
    assert len(data["images"]["keys"]) == 500 and data["layers"] == list(range(24))
    thumbs = data["images"]["thumbs"]
    assert sum(1 for t in thumbs if t) == 24 and not thumbs[30]
    assert data["images"]["refs"][0] and not data["images"]["refs"][30]
    # parts are located in their captions and coloured by merged category
    k = data["captions"].index("a man riding a motorcycle on a dirt path .")
    spans = data["spans"][k]
    found = {data["captions"][k][spans[i]:spans[i + 1]]: data["categories"][spans[i + 2]] for i in range(0, len(spans), 4)}
    assert found and set(found.values()) <= set(data["categories"])
    assert "person" in found.values()


def test_report_reads_inputs_from_and_writes_to_s3(reference_tables, reference_shards, s3_bucket):
    from latent_verbalizer.components.common import storage

    base = s3_bucket + "/run-1"
    uris = {}
    for role in ("captions", "labels", "aggregate"):
        uris[role] = f"{base}/tables/{os.path.basename(reference_tables[role])}"
        storage.write_bytes(uris[role], open(reference_tables[role], "rb").read())
    shard_dir = os.path.dirname(reference_shards["pattern"])
    for name in os.listdir(shard_dir):
        storage.write_bytes(f"{base}/shards/{name}", open(os.path.join(shard_dir, name), "rb").read())
    result = build_report([f"{base}/tables/captions-*.parquet"], uris["labels"], uris["aggregate"], f"{base}/report",
                          f"{base}/shards/shard-{{000000..000001}}.tar")
    assert result.metrics["images_with_references"] == 24
    listed = storage.list_uris(f"{base}/report")
    for name in ("report.html", "summary.md", "metrics.json", "category_share.csv", "plots/category_share.png",
                 "plots/category_share.svg", "plots/entropy.svg"):
        assert f"{base}/report/{name}" in listed, name
    assert storage.read_bytes(f"{base}/report/report.html").decode() == result.html
    assert result.files["report.html"] == f"{base}/report/report.html"
