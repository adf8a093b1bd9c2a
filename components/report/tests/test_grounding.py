"""The report's part of the per-patch maps (issue #21): reading the captions' grounding column, the
spread of the maps per layer (checked on hand-computed examples), the outputs, and a run without
maps left exactly as it was."""

from __future__ import annotations

import base64
import csv
import json
import math

import numpy as np
import pytest

from latent_verbalizer.components.common.contracts import CAPTIONS_FORMAT, CAPTIONS_SCHEMA, CAPTIONS_VERSION
from latent_verbalizer.components.common.tables import provenance, write_table
from latent_verbalizer.components.report.inputs.tables import load_inputs
from latent_verbalizer.components.report.metrics.grounding_maps import map_spread, read_run_maps, top_count
from latent_verbalizer.components.report.single.report import build_report
from tests.grounded_tables import (
    blob_map,
    blob_maps,
    with_maps,
    write_grounded_captions,
)
from tests.page_parsing import embedded_data
from tests.run_layouts import caption_rows

GRID = (7, 7)
P = 49
COCA = {"model": "coca_ViT-L-14", "pretrained": "laion2b", "precision": "fp32"}


def uniform(n: int = P) -> np.ndarray:
    return np.full(n, 1.0 / n)


def one_hot(patch: int, n: int = P) -> np.ndarray:
    m = np.zeros(n)
    m[patch] = 1.0
    return m


def test_spread_of_hand_checkable_maps():
    entropy, top = map_spread(np.stack([uniform(), one_hot(17), np.r_[0.5, 0.25, 0.25, np.zeros(P - 3)]]))
    assert entropy == pytest.approx([math.log2(49), 0.0, 1.5], abs=1e-12)
    # the top 10% of 49 patches are ceil(4.9) = 5: a uniform map's 5/49, all of a one-patch map, all of the 3-patch one
    assert top_count(49) == 5 and top_count(196) == 20 and top_count(576) == 58 and top_count(4) == 1
    assert top == pytest.approx([5 / 49, 1.0, 1.0], abs=1e-12)
    entropy, top = map_spread(np.stack([uniform(10), np.r_[0.5, 0.3, 0.2, np.zeros(7)]]))
    assert entropy[0] == pytest.approx(math.log2(10)) and top == pytest.approx([0.1, 0.5])
    assert entropy[1] == pytest.approx(-(0.5 * math.log2(0.5) + 0.3 * math.log2(0.3) + 0.2 * math.log2(0.2)))


def _captions(n_images: int = 4, n_layers: int = 2, shard: str = "s0", first: int = 0):
    rows = [(f"img{i:03d}", layer, f"caption {i} {layer}") for i in range(first, first + n_images)
            for layer in range(n_layers)]
    return caption_rows(rows, shard=shard)


def _hand_maps(captions) -> list[np.ndarray]:
    """Layer 0: every map uniform; layer 1: one-hot for images 0 and 1, uniform for 2 and 3."""
    out = []
    for key, layer in zip(captions.column("image_key").to_pylist(), captions.column("layer").to_pylist()):
        image = int(key[3:])
        out.append(one_hot(image + 3) if layer == 1 and image < 2 else uniform())
    return out


def test_report_writes_the_spread_per_layer(tmp_path):
    captions = _captions()
    uri = write_grounded_captions(str(tmp_path / "captions.parquet"), with_maps(captions, _hand_maps(captions)),
                                  GRID, COCA)
    r = build_report([uri], None, None, str(tmp_path / "out"))
    for name in ("grounding_spread.csv", "plots/grounding_spread.png", "plots/grounding_spread.svg"):
        assert name in r.files
    with open(r.files["grounding_spread.csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [int(row["layer"]) for row in rows] == [0, 1] and [int(row["n_maps"]) for row in rows] == [4, 4]
    u = math.log2(49)   # the float16 uniform map renormalised: exactly uniform again
    got = [[float(row[k]) for k in ("entropy_bits_p25", "entropy_bits_median", "entropy_bits_p75")] for row in rows]
    assert got[0] == pytest.approx([u, u, u], abs=1e-9)
    # layer 1: entropies [0, 0, u, u]: the 25th percentile 0, the median u / 2, the 75th u (linear interpolation)
    assert got[1] == pytest.approx([0.0, u / 2, u], abs=1e-9)
    top = [[float(row[k]) for k in ("top10_share_p25", "top10_share_median", "top10_share_p75")] for row in rows]
    assert top[0] == pytest.approx([5 / 49] * 3, abs=1e-9)
    assert top[1] == pytest.approx([5 / 49, (1 + 5 / 49) / 2, 1.0], abs=1e-9)
    assert r.metrics["grounding_maps"] == 8 and r.metrics["grounding_maps_unusable"] == 0
    assert r.metrics["grounding_entropy_bits_median_last_layer"] == pytest.approx(u / 2)
    assert json.loads(open(r.files["metrics.json"]).read())["grounding_maps"] == 8
    assert "Where the captions look: 8 per-patch maps on the 7 x 7 patch grid" in r.markdown
    assert 'id="grounding"' in r.html and 'id="chart-grounding"' in r.html and 'id="grounding-data"' in r.html


def test_maps_follow_the_caption_rows_across_files(tmp_path):
    """Rows of a file without maps stay empty, a null map is no map, and each map stays with its caption
    row in the order the captions are read (the files concatenated)."""
    plain = _captions(2, 2, "s0")
    plain_uri = str(tmp_path / "plain.parquet")
    write_table(plain_uri, plain, CAPTIONS_SCHEMA, CAPTIONS_FORMAT, CAPTIONS_VERSION, provenance(**COCA))
    grounded = _captions(3, 2, "s1", first=2)
    maps = [blob_map(GRID, (row // 2, row % 7)) for row in range(grounded.num_rows)]
    maps[3] = None
    grounded_uri = write_grounded_captions(str(tmp_path / "grounded.parquet"), with_maps(grounded, maps), GRID, COCA)
    inputs = load_inputs([plain_uri, grounded_uri], None, None)
    run = read_run_maps(inputs)
    assert run.grid == GRID and run.present.tolist() == [False] * 4 + [True] * 3 + [False] + [True] * 2
    for row, m in enumerate(maps):
        if m is not None:
            got = run.weights[4 + row].astype(np.float64)
            assert np.argmax(got) == np.argmax(m) and np.allclose(got, m, atol=1e-3)
    assert inputs.captions.column("image_key").to_pylist()[4 + 5] == "img004"  # the row the last map belongs to
    assert read_run_maps(load_inputs([plain_uri], None, None)) is None


def test_maps_that_do_not_fit_are_errors_naming_the_file(tmp_path):
    a = _captions(2, 1, "s0")
    a_uri = write_grounded_captions(str(tmp_path / "a.parquet"), with_maps(a, blob_maps(a, GRID, 1)), GRID, COCA)
    b = _captions(2, 1, "s1", first=2)
    b_uri = write_grounded_captions(str(tmp_path / "b.parquet"), with_maps(b, blob_maps(b, (4, 4), 1)), (4, 4), COCA)
    with pytest.raises(ValueError, match=r"b\.parquet: its maps are on a 4 x 4 patch grid.*7 x 7.*different models"):
        read_run_maps(load_inputs([a_uri, b_uri], None, None))
    short = write_grounded_captions(str(tmp_path / "short.parquet"),
                                    with_maps(b, [np.full(10, 0.1)] * b.num_rows), GRID, COCA)
    with pytest.raises(ValueError, match=r"short\.parquet: row 0's map has 10 values.*49 patches"):
        read_run_maps(load_inputs([short], None, None))


def test_unusable_maps_are_counted_not_drawn(tmp_path):
    captions = _captions(3, 1)
    maps = [uniform(), np.zeros(P), np.r_[-0.5, 1.5, np.zeros(P - 2)]]
    uri = write_grounded_captions(str(tmp_path / "c.parquet"), with_maps(captions, maps), GRID, COCA)
    r = build_report([uri], None, None, str(tmp_path / "out"))
    assert r.metrics["grounding_maps"] == 1 and r.metrics["grounding_maps_unusable"] == 2
    assert "2 maps were left out" in r.html


def test_a_run_without_maps_is_reported_as_before(tmp_path):
    captions = _captions()
    uri = str(tmp_path / "captions.parquet")
    write_table(uri, captions, CAPTIONS_SCHEMA, CAPTIONS_FORMAT, CAPTIONS_VERSION, provenance(**COCA))
    r = build_report([uri], None, None, str(tmp_path / "out"))
    assert not [name for name in r.files if "grounding" in name]
    assert not [key for key in r.metrics if key.startswith("grounding")]
    body = r.html.split("</style>", 1)[1]  # the styles always carry the overlay's (unused) rules
    assert "grounding" not in body and "gmap" not in body and "Where the captions look" not in body
    assert "Where the captions look" not in r.markdown


def test_a_run_compared_with_another_carries_both_runs_maps(tmp_path):
    """build_report(compare_with=...): this run's maps for its own browser, and both runs' (B on its own grid,
    drawn over the whole image: BLIP) for the comparison's, aligned by depth."""
    from tests.grounded_tables import write_grounded_run
    from tests.run_layouts import blip_parameters, write_labels

    paths = {}
    for name, n_layers, grid, params in (("a", 4, GRID, COCA), ("b", 2, (4, 4), blip_parameters(2))):
        captions = _captions(3, n_layers)
        prefix = str(tmp_path / f"run-{name}")
        paths[name] = write_grounded_run(prefix, with_maps(captions, blob_maps(captions, grid, n_layers)), grid, params)
        paths[name + "_labels"] = write_labels(prefix, captions, [(c, [], "no_parts") for c in
                                                                 dict.fromkeys(captions.column("caption").to_pylist())],
                                               {"object": "object"})
        paths[name + "_prefix"] = prefix
    r = build_report(paths["a"], *paths["a_labels"], str(tmp_path / "out"), compare_with=paths["b_prefix"])
    data = embedded_data(r.html, "grounding-data")
    assert r.html.index('id="grounding-data"') < r.html.index('id="report-data"')  # set before the browsers draw
    single, compare = data["single"], data["compare"]
    assert single["grid"] == [7, 7] and single["view"] == "square" and single["layers"] == [0, 1, 2, 3]
    assert len(single["maps"]) == 3 and all(len(m) == 4 for m in single["maps"])
    a, b = compare["runs"]
    assert (a["grid"], a["view"], b["grid"], b["view"]) == ([7, 7], "square", [4, 4], "whole")
    assert b["labels"] == ["encoder layer 1", "encoder layer 2"]
    # rows by depth: A's blocks at 0.25 .. 1.0, B's layers at 0.5 and 1.0
    assert compare["rows"] == [[0.25, 0, -1], [0.5, 1, 0], [0.75, 2, -1], [1.0, 3, 1]]
    first = np.frombuffer(base64.b64decode(b["maps"][0][1]), dtype=np.uint8)
    assert first.max() == 255 and np.argmax(first) == np.ravel_multi_index((3, 1), (4, 4))  # blob_centre of image 0, layer 1


def test_maps_beyond_the_page_budget_are_left_to_the_figure(tmp_path):
    from latent_verbalizer.components.report.inputs.layer_naming import layer_naming
    from latent_verbalizer.components.report.metrics.layer_stats import CaptionGrid
    from latent_verbalizer.components.report.single.grounding_page import run_grounding, single_maps

    captions = _captions(4, 2)
    maps = blob_maps(captions, GRID, 2)
    maps[2] = maps[3] = None   # image 1 has no map
    uri = write_grounded_captions(str(tmp_path / "c.parquet"), with_maps(captions, maps), GRID, COCA)
    inputs = load_inputs([uri], None, None)
    grid = CaptionGrid.from_table(inputs.captions)
    naming = layer_naming(inputs.provenance["captions"], grid.layers)
    g = run_grounding(inputs, grid, naming, figure=False)
    one_image = 2 * len(base64.b64encode(bytes(P)))   # two layers of 49 bytes, in base64
    data, embedded, with_maps_ = single_maps(g, grid, naming, budget=one_image + 1)
    # image 0 fits, image 1 has none, image 2 fits (the budget was not yet spent), image 3 is left out
    assert [None if m is None else ("" if m == "" else len(m)) for m in data["maps"]] == [2, None, 2, ""]
    assert (embedded, with_maps_) == (2, 3)
    assert sum(g.spread.n_maps) == 6   # the figure counts them all
