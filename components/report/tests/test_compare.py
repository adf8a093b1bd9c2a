"""Two runs in one report: layer naming (recorded and the CoCa fallback), the shares on relative
depth and their difference on a hand-checked case, the CLI, the KFP step's parameter, and a run
the real extract and caption steps made (tiny-random-coca) compared with another model's."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil

import pytest
import yaml
from kfp import dsl

from latent_verbalizer.components.report.compare.report import build_compare_report
from latent_verbalizer.components.report.component import make_report_op
from latent_verbalizer.components.report.inputs.layer_naming import layer_naming
from latent_verbalizer.components.report.single.report import build_report
from latent_verbalizer.pipeline.cli import main as lverb
from tests.page_parsing import embedded_data
from tests.run_layouts import (
    blip_parameters,
    caption_rows,
    captions_of_run,
    write_captions,
    write_labels,
)

CATEGORY_MAP = {"color": "color", "animal": "animal", "object": "object"}
LABEL_OF = {"a red ball": "color", "a red thing": "color", "a dog": "animal", "a car": "object"}
ROWS_A = [("k0", 0, "a red ball"), ("k0", 1, "a dog"), ("k1", 0, "a red ball"), ("k1", 1, "a dog")]
ROWS_B = [("k1", 0, "a red thing"), ("k1", 1, "a dog"), ("k1", 2, "a dog"), ("k1", 3, "a dog"),
          ("k2", 0, "a red thing"), ("k2", 1, "a red ball"), ("k2", 2, "a dog"), ("k2", 3, "a car")]


def _entries(rows):
    return [(c, [(c, [LABEL_OF[c]])], "ok") for c in dict.fromkeys(r[2] for r in rows)]


def _run(prefix, rows, parameters, entropy=3.0) -> str:
    table = caption_rows(rows, entropy)
    write_captions(str(prefix), table, parameters)
    write_labels(str(prefix), table, _entries(rows), CATEGORY_MAP)
    return str(prefix)


@pytest.fixture
def hand_runs(tmp_path):
    """A: an old CoCa run (no naming recorded: 2 blocks by the fallback, depths 0.5 and 1.0), images k0, k1.
    B: a 4-block BLIP run (depths 0.25 .. 1.0), images k1, k2."""
    a = _run(tmp_path / "run-a", ROWS_A, {"model": "coca-small", "pretrained": "p", "precision": "fp32"})
    b = _run(tmp_path / "run-b", ROWS_B, blip_parameters(4), entropy=2.0)
    return a, b


# ------------------------------------------------------------------ layer naming

def test_layer_naming_falls_back_for_old_coca_captions_and_reads_the_recorded_one():
    old = layer_naming([{"parameters": {"model": "coca_ViT-L-14", "precision": "fp32"}}], list(range(24)))
    assert (old.family, old.n_layers, old.normal_layer, old.recorded) == ("open_clip-coca", 24, 23, False)
    assert old.label(5) == "block 5" and old.depth(23) == 1.0 and old.depth(11) == 0.5
    assert "not recorded" in old.source_text()
    # the fallback counts blocks up to the highest captioned one
    assert layer_naming([{}], [0, 5]).n_layers == 6

    new = layer_naming([{"parameters": blip_parameters(12)}], [0, 11])
    assert (new.family, new.model, new.n_layers, new.normal_layer, new.recorded) == ("hf-blip", "hf:tiny-blip", 12, 11,
                                                                                      True)
    assert new.label(0) == "encoder layer 1" and new.depth(5) == 0.5
    assert new.describe(11) == "encoder layer 12 (depth 1.00)"


def test_layer_naming_that_does_not_fit_is_an_error_naming_the_source():
    bad = blip_parameters(4)
    bad["layer_numbering"]["labels"] = ["x"] * 3
    with pytest.raises(ValueError, match="RUN_B x captions: layer_numbering.labels must list 4 texts"):
        layer_naming([{"parameters": bad}], [0], "RUN_B x captions")
    with pytest.raises(ValueError, match=r"captions at layers \[4\], but layer_numbering records only 4 blocks"):
        layer_naming([{"parameters": blip_parameters(4)}], [0, 4])
    with pytest.raises(ValueError, match="different model families or layer numberings"):
        layer_naming([{"parameters": blip_parameters(4)}, {"parameters": blip_parameters(6)}], [0])


# ------------------------------------------------------------------ the shares, by hand

def test_shares_on_relative_depth_and_difference_by_hand(hand_runs, tmp_path):
    a, b = hand_runs
    out = tmp_path / "out"
    r = build_compare_report(a, b, str(out))
    with open(out / "compare_shares.csv") as f:
        got = {(float(row["relative_depth"]), row["category"]): row for row in csv.DictReader(f)}
    # A (depths 0.5, 1.0): color 100 | animal 100. B (0.25 .. 1.0): color 100 | color 50, animal 50 |
    # animal 100 | animal 50, object 50. A at 0.75 is halfway between its two layers: color 50, animal 50.
    want = {  # (depth, category): (A, B, B - A); "" = no value (A has no layer at or below 0.25)
        (0.25, "color"): ("", 100.0, ""),
        (0.5, "color"): (100.0, 50.0, -50.0), (0.5, "animal"): (0.0, 50.0, 50.0), (0.5, "object"): (0.0, 0.0, 0.0),
        (0.75, "color"): (50.0, 0.0, -50.0), (0.75, "animal"): (50.0, 100.0, 50.0),
        (1.0, "animal"): (100.0, 50.0, -50.0), (1.0, "object"): (0.0, 50.0, 50.0), (1.0, "color"): (0.0, 0.0, 0.0),
    }
    for key, (share_a, share_b, diff) in want.items():
        row = got[key]
        assert (row["share_a_percent"], row["share_b_percent"], row["b_minus_a_points"]) == tuple(
            "" if v == "" else repr(v) for v in (share_a, share_b, diff)), key
    assert (got[(0.75, "color")]["layer_a"], got[(0.75, "color")]["layer_b"]) == ("", "2")  # A interpolated there
    assert (got[(1.0, "color")]["layer_a"], got[(1.0, "color")]["layer_b"]) == ("1", "3")
    assert sorted({d for d, _ in got}) == [0.25, 0.5, 0.75, 1.0]

    m = r.metrics
    assert (m["compare_images_shared"], m["compare_images_only_a"], m["compare_images_only_b"]) == (1, 1, 1)
    assert (m["compare_layers_a"], m["compare_layers_b"]) == (2, 4)
    assert m["compare_max_abs_share_difference_points"] == 50.0
    assert m["compare_entropy_last_layer_mean_a"] == 4.0 and m["compare_entropy_last_layer_mean_b"] == 5.0
    assert json.load(open(out / "metrics.json")) == m and open(out / "summary.md").read() == r.markdown
    for name in ("compare_category_share", "compare_share_difference", "compare_entropy"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 5000 and (out / "plots" / f"{name}.svg").exists()

    # the page: both runs named (model, family, precision; B's bf16 marked), the interpolation said
    html = r.html
    for text in ("coca-small", "open_clip-coca", "hf:tiny-blip", "hf-blip", "encoder layer 4",
                 "interpolated linearly", "1 images both runs captioned; 1 only in A (coca-small), 1 only in B",
                 "Method deviation:</strong> B (hf:tiny-blip): captions decoded in bfloat16"):
        assert text in html, text
    data = embedded_data(html, "compare-data")
    assert data["keys"] == ["k1"]
    assert data["rows"] == [[0.25, -1, 0], [0.5, 0, 1], [0.75, -1, 2], [1.0, 1, 3]]
    run_a, run_b = data["runs"]
    assert run_a["labels"] == ["block 0", "block 1"] and run_b["labels"][3] == "encoder layer 4"
    assert [run_b["captions"][i] for i in run_b["cap"]] == ["a red thing", "a dog", "a dog", "a dog"]
    assert [run_a["captions"][i] for i in run_a["cap"]] == ["a red ball", "a dog"]


def test_single_report_labels_layers_by_the_models_numbering(hand_runs, tmp_path):
    _, b = hand_runs
    r = build_report(f"{b}/captions", f"{b}/labels/labels.parquet", f"{b}/labels/aggregate.parquet",
                     str(tmp_path / "single"))
    with open(tmp_path / "single" / "layer_stats.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(row["layer"], row["layer_label"], row["relative_depth"]) for row in rows] == [
        ("0", "encoder layer 1", "0.25"), ("1", "encoder layer 2", "0.5"), ("2", "encoder layer 3", "0.75"),
        ("3", "encoder layer 4", "1.0")]
    assert embedded_data(r.html)["layerLabels"][0] == "encoder layer 1 (depth 0.25)"
    svg = (tmp_path / "single" / "plots" / "entropy.svg").read_text()
    assert "layer (BLIP vision encoder layer, 1-based)" in svg and "relative depth" in svg
    assert "hf-blip, 4 blocks" in r.html


# ------------------------------------------------------------------ the CLI

def test_cli_compares_two_runs_and_names_what_a_run_lacks(hand_runs, tmp_path, capsys):
    a, b = hand_runs
    assert lverb(["report", "--compare", a, b, "--out", str(tmp_path / "o"), "--names", "old", "new"]) == 0
    assert "# latent-verbalizer: two runs compared" in capsys.readouterr().out
    page = (tmp_path / "o" / "report.html").read_text()
    assert "A: old" in page and "B: new" in page

    unfinished = tmp_path / "unfinished"
    shutil.copytree(b, unfinished)
    os.remove(unfinished / "labels" / "aggregate.parquet")
    cases = [
        (["--compare", a, str(unfinished)],
         f"RUN_B {unfinished} has no labels/aggregate.parquet: its categorize step has not finished"),
        (["--compare", str(tmp_path / "nowhere"), b], "RUN_A .*nowhere: no such folder"),
        (["--compare", str(tmp_path / "o"), b], "RUN_A .* has no captions/<shard>/captions.parquet"),
        (["--compare", a, b, "--captions", "c.parquet"], "--compare RUN_A RUN_B reads each run's tables .*--captions"),
        (["--captions", "c.parquet", "--labels", "l", "--aggregate", "g", "--names", "x", "y"], "--names names"),
    ]
    for args, message in cases:
        assert lverb(["report", *args, "--out", str(tmp_path / "bad")]) == 2, args
        assert re.search(message, capsys.readouterr().err), message
    assert not (tmp_path / "bad").exists()


def test_a_local_runs_folder_is_taken_for_its_data_prefix(hand_runs, tmp_path):
    a, b = hand_runs
    local = tmp_path / "runs" / "20261202-101010"
    shutil.copytree(a, local / "data")  # lverb run --local writes bulk data under runs/<timestamp>/data
    r = build_compare_report(str(local), b, str(tmp_path / "o"))
    assert str(local / "data") in r.html


# ------------------------------------------------------------------ the KFP step and the pipeline

def _pointer(path, content: dict) -> dsl.Dataset:
    path.write_text(json.dumps(content))
    return dsl.Dataset(uri=str(path))


def test_report_step_compares_with_the_run_its_parameter_names(hand_runs, tmp_path):
    a, b = hand_runs
    captions = [_pointer(tmp_path / "c.json", {"captions": f"{a}/captions/s0/captions.parquet"})]
    labels = _pointer(tmp_path / "l.json", {"labels": f"{a}/labels/labels.parquet",
                                            "aggregate": f"{a}/labels/aggregate.parquet"})

    def step(compare_prefix: str, where: str):
        report = dsl.HTML(uri=str(tmp_path / f"{where}.html"))
        metrics = dsl.Metrics(uri=str(tmp_path / f"{where}-m"))
        make_report_op("unused-image").python_func(
            captions=captions, labels=labels, storage_prefix=str(tmp_path / where), shards="", report=report,
            summary=dsl.Markdown(uri=str(tmp_path / f"{where}.md")), metrics=metrics, compare_prefix=compare_prefix)
        return open(report.path, encoding="utf-8").read(), metrics.metadata

    html, metrics = step(b, "with")
    assert 'id="compare-data"' in html and 'id="report-data"' in html and "hf-blip" in html
    assert metrics["compare_images_shared"] == 1.0 and metrics["images"] == 2.0
    assert (tmp_path / "with" / "report" / "compare_shares.csv").exists()
    assert "## Compared with another run" in open(tmp_path / "with.md").read()

    html, metrics = step("", "without")
    assert 'id="compare-data"' not in html and "compare_images_shared" not in metrics

    with pytest.raises(FileNotFoundError, match=f"report_compare_prefix {tmp_path}/nothing-here: no such folder"):
        step(str(tmp_path / "nothing-here"), "bad")
    os.makedirs(tmp_path / "half" / "captions" / "s0")
    shutil.copy(f"{b}/captions/s0/captions.parquet", tmp_path / "half" / "captions" / "s0")
    shutil.copy(f"{b}/captions/s0/manifest.json", tmp_path / "half" / "captions" / "s0")
    with pytest.raises(FileNotFoundError, match="report_compare_prefix .*half has no labels/labels.parquet: its "
                                                "categorize step has not finished"):
        step(str(tmp_path / "half"), "bad")


def test_pipeline_parameter_feeds_the_report_step(tmp_path):
    from latent_verbalizer.pipeline.compile import compile_pipeline

    path = tmp_path / "p.yaml"
    compile_pipeline(str(path))
    spec, _ = yaml.safe_load_all(path.read_text())
    assert spec["root"]["inputDefinitions"]["parameters"]["report_compare_prefix"]["defaultValue"] == ""
    report = spec["root"]["dag"]["tasks"]["build-report-page"]
    assert report["inputs"]["parameters"]["compare_prefix"] == {"componentInputParameter": "report_compare_prefix"}


# ------------------------------------------------------------------ a run of the real steps

def test_a_run_the_caption_step_made_is_compared_by_its_recorded_naming(tmp_path):
    """tiny-random-coca through the real extract and caption steps (its captions record the family
    and the layer numbering), labelled as categorize writes labels, against a 12-block BLIP run."""
    from latent_verbalizer.components.caption.caption import CaptionSettings, run_caption
    from latent_verbalizer.components.extract.extract import ExtractSettings, run_extract
    from tests.images import jpeg_shard

    a = tmp_path / "coca-run"
    jpeg_shard(str(tmp_path / "s-000000.tar"), 3)
    run_extract([str(tmp_path / "s-000000.tar")], str(a / "features"), ExtractSettings(model="tiny-random-coca", device="cpu", batch_size=3))
    run_caption(str(a / "features"), str(a / "captions"), CaptionSettings(device="cpu"))
    captions = captions_of_run(str(a))
    kinds = ("color", "animal", "object")
    entries = [(c, [(c, [kinds[len(c) % 3]])], "ok") for c in dict.fromkeys(captions.column("caption").to_pylist())]
    write_labels(str(a), captions, entries, CATEGORY_MAP)
    rows_b = [(f"img{i:05d}", layer, "a red ball" if layer < 6 else "a dog") for i in (1, 2, 3) for layer in range(12)]
    b = _run(tmp_path / "blip-run", rows_b, blip_parameters(12))

    r = build_compare_report(str(a), b, str(tmp_path / "o"))
    data = embedded_data(r.html, "compare-data")
    assert data["keys"] == ["img00001", "img00002"]
    run_a, run_b = data["runs"]
    n_blocks = len(run_a["layers"])
    assert run_a["labels"] == [f"block {k}" for k in range(n_blocks)] and n_blocks == 6
    assert run_a["depths"][-1] == run_b["depths"][-1] == 1.0
    # every row has a caption of the run whose depth it is; B's 12 depths include A's 6
    assert len(data["rows"]) == 12 and all(row[2] >= 0 for row in data["rows"])
    assert sum(row[1] >= 0 for row in data["rows"]) == 6
    assert r.metrics["compare_images_only_a"] == 1 and r.metrics["compare_images_only_b"] == 1
    assert "tiny-random-coca" in r.html and "open_clip-coca, 6 blocks" in r.html
    assert "recorded by the caption step" in r.html and "not recorded in these captions" not in r.html


# ------------------------------------------------------------------ edges

def test_interpolation_leaves_gaps_next_to_a_layer_without_labels():
    import numpy as np

    from latent_verbalizer.components.report.metrics.depth_shares import at_depths

    values = np.array([[np.nan], [100.0]])  # layer 0 has no labels
    got, exact = at_depths([0.5, 1.0], [0, 1], values, [0.25, 0.5, 0.75, 1.0])
    assert np.isnan(got[:3, 0]).all() and got[3, 0] == 100.0
    assert exact == [None, 0, None, 1]


def test_runs_without_shared_images_or_with_one_model_name_are_told_apart(tmp_path):
    params = {"model": "same-model", "precision": "fp32"}
    a = _run(tmp_path / "a", [("x0", 0, "a dog"), ("x0", 1, "a dog")], params)
    b = _run(tmp_path / "b", [("y0", 0, "a car"), ("y0", 1, "a red ball")], params)
    r = build_compare_report(a, b, str(tmp_path / "o"))
    assert "the runs share no image" in r.html and "the runs share no image" in r.markdown
    data = embedded_data(r.html, "compare-data")
    assert data["keys"] == [] and [run["name"] for run in data["runs"]] == ["same-model (A)", "same-model (B)"]


def test_runs_on_s3(hand_runs, s3_bucket, tmp_path):
    from latent_verbalizer.components.common import storage

    a, b = hand_runs
    for local, name in ((a, "run-a"), (b, "run-b")):
        for root, _, files in os.walk(local):
            for f in files:
                path = os.path.join(root, f)
                storage.write_bytes(f"{s3_bucket}/runs/{name}/{os.path.relpath(path, local)}", open(path, "rb").read())
    r = build_compare_report(f"{s3_bucket}/runs/run-a", f"{s3_bucket}/runs/run-b", f"{s3_bucket}/compare")
    assert r.metrics["compare_images_shared"] == 1
    assert storage.read_bytes(f"{s3_bucket}/compare/report.html").decode() == r.html
    assert f"{s3_bucket}/compare/compare_shares.csv" in storage.list_uris(f"{s3_bucket}/compare")
    with pytest.raises(FileNotFoundError, match=f"RUN_B {s3_bucket}/runs/none has no captions/<shard>/captions.parquet"):
        build_compare_report(f"{s3_bucket}/runs/run-a", f"{s3_bucket}/runs/none", f"{s3_bucket}/x")


def test_a_layer_without_labels_is_a_gap_and_a_warning(hand_runs, tmp_path):
    a, _ = hand_runs
    rows = [("k1", 0, "a dog"), ("k1", 1, "zzz"), ("k1", 2, "a car")]
    table = caption_rows(rows)
    b = str(tmp_path / "gappy")
    write_captions(b, table, blip_parameters(3))
    write_labels(b, table, [("a dog", [("a dog", ["animal"])], "ok"), ("zzz", [], "unparseable"),
                            ("a car", [("a car", ["object"])], "ok")], CATEGORY_MAP)
    r = build_compare_report(a, b, str(tmp_path / "o"))
    assert "hf:tiny-blip: no valid labels at layer 1 (shown as gaps)" in r.html
    with open(tmp_path / "o" / "compare_shares.csv") as f:
        got = {(float(row["relative_depth"]), row["category"]): row for row in csv.DictReader(f)}
    # B's depth 2/3 has no labels: no value there, and none interpolated next to it (A's 0.5 .. 1.0 has values)
    two_thirds = round(2 / 3, 9)  # the CSV's depths carry 9 digits
    assert got[(two_thirds, "animal")]["share_b_percent"] == "" and got[(two_thirds, "animal")]["share_a_percent"] != ""
    assert got[(0.5, "animal")]["share_b_percent"] == "" and got[(1.0, "object")]["share_b_percent"] == "100.0"
