"""Inputs at the edges: empty, one layer, a layer without valid labels, hostile caption text."""

from __future__ import annotations

import argparse
import json
import math
import os

import pytest

from latent_verbalizer.components.common.contracts import AGGREGATE_SCHEMA
from latent_verbalizer.components.common.tables import write_table
from latent_verbalizer.components.report import cli
from latent_verbalizer.components.report.single.report import build_report
from tests.categorized_tables import (
    categorize_provenance,
)
from tests.page_parsing import category_cells, embedded_data
from tests.small_report_inputs import HOSTILE, hostile_inputs, write_caption_rows, write_categorized_rows


def test_no_captions_given_or_found(tmp_path):
    with pytest.raises(ValueError, match="no captions tables given"):
        build_report([], None, None, str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="--captions .*missing.parquet.*no such file"):
        build_report([str(tmp_path / "missing.parquet")], None, None, str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="pattern matches nothing"):
        build_report([str(tmp_path / "cap-*.parquet")], None, None, str(tmp_path / "out"))


def test_empty_captions_table_is_a_clear_error(tmp_path):
    path = write_caption_rows([], str(tmp_path / "c.parquet"))
    with pytest.raises(ValueError, match="no caption rows at all"):
        build_report([path], None, None, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / "report.html")


def test_wrong_table_is_named(tmp_path):
    caps = write_caption_rows([("k1", 0, "a dog")], str(tmp_path / "c.parquet"))
    labels, _ = write_categorized_rows([("k1", 0, "a dog")], [("a dog", [("a dog", ["animal"])], "ok")], tmp_path)
    with pytest.raises(ValueError, match="labels.parquet: not a captions table.*missing columns"):
        build_report([labels], None, None, str(tmp_path / "out"))
    with pytest.raises(ValueError, match="--aggregate .*labels.parquet: not a aggregate table.*missing columns"):
        build_report([caps], labels, labels, str(tmp_path / "out"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="junk.parquet: not a readable Parquet"):
        build_report([str(tmp_path / "junk.parquet")], None, None, str(tmp_path / "out"))


def test_captions_alone_and_an_empty_labels_table(tmp_path):
    rows = [("k1", 0, "red red red"), ("k1", 1, "a red car")]
    caps = write_caption_rows(rows, str(tmp_path / "c.parquet"))
    r = build_report([caps], None, None, str(tmp_path / "a"))
    assert "No labels given" in r.html and r.metrics["images"] == 1
    labels, aggregate = write_categorized_rows(rows, [("red red red", [], "unparseable"), ("a red car", [], "no_parts")],
                                     tmp_path / "t")
    r = build_report([caps], labels, aggregate, str(tmp_path / "b"))
    assert "No caption has a valid labelled part" in r.html or "no valid labels" in r.html
    assert r.metrics["captions_in_shares_percent"] == 0.0
    assert r.metrics["answers_unparseable"] == 1 and r.metrics["answers_no_parts"] == 1


def test_labels_and_aggregate_come_together(tmp_path):
    """The report no longer aggregates labels itself: the categorize step's aggregate is required."""
    rows = [("k1", 0, "a dog")]
    caps = write_caption_rows(rows, str(tmp_path / "c.parquet"))
    labels, aggregate = write_categorized_rows(rows, [("a dog", [("a dog", ["animal"])], "ok")], tmp_path)
    with pytest.raises(ValueError, match="--labels given without --aggregate.*aggregate.parquet"):
        build_report([caps], labels, None, str(tmp_path / "out"))
    with pytest.raises(ValueError, match="--aggregate given without --labels"):
        build_report([caps], None, aggregate, str(tmp_path / "out"))


def test_aggregate_without_the_category_map_is_an_error_not_a_fallback(tmp_path):
    """Old code fell back to raw labels (and swallowed any error reading a map path): now the
    missing map is named, with the fix."""
    rows = [("k1", 0, "a dog")]
    caps = write_caption_rows(rows, str(tmp_path / "c.parquet"))
    labels, aggregate = write_categorized_rows(rows, [("a dog", [("a dog", ["animal"])], "ok")], tmp_path)
    from latent_verbalizer.components.common.tables import read_table, table_metadata

    table = read_table(aggregate)
    for broken in ({}, {"category_map": "/nowhere/merged_categories.yaml"}, {"category_map": {"animal": ["a"]}}):
        meta = {k: v for k, v in table_metadata(table).items() if k != "category_map"}
        write_table(aggregate, table, AGGREGATE_SCHEMA, "latent-verbalizer/labels/aggregate", 1, {**meta, **broken})
        with pytest.raises(ValueError, match=r"--aggregate .*aggregate.parquet: .*(no label-to-category map|"
                                             r"must map each label).*re-run categorize"):
            build_report([caps], labels, aggregate, str(tmp_path / "out"))


def test_labels_of_another_model_or_label_set_are_refused(tmp_path):
    rows = [("k1", 0, "a dog"), ("k1", 1, "a brown dog")]
    caps = write_caption_rows(rows, str(tmp_path / "c.parquet"))
    entries = [("a dog", [("a dog", ["animal"])], "ok"), ("a brown dog", [("a brown dog", ["animal"])], "ok")]
    for changed in ({"model": "another-llm"}, {"labels": "other-labels.yaml"}):
        labels, aggregate = write_categorized_rows(rows, entries, tmp_path / next(iter(changed)),
                                         aggregate_made_by=categorize_provenance(**changed))
        key = next(iter(changed))
        with pytest.raises(ValueError, match=f"come from different categorize runs \\({key}: "):
            build_report([caps], labels, aggregate, str(tmp_path / "out"))
    # a parameter only the labels table records (e.g. the answer schema it was held to) is no conflict
    labels, aggregate = write_categorized_rows(rows, entries, tmp_path / "schema",
                                     made_by=categorize_provenance(answer_schema={"maxItems": 3}),
                                     aggregate_made_by=categorize_provenance())
    assert build_report([caps], labels, aggregate, str(tmp_path / "ok")).metrics["captions_in_shares_percent"] == 100
    # labels made from other captions: the captions' text is not in them
    labels, aggregate = write_categorized_rows(rows[:1], entries[:1], tmp_path / "fewer")
    with pytest.raises(ValueError, match="1 of the 2 distinct captions have no labels row.*'a brown dog'"):
        build_report([caps], labels, aggregate, str(tmp_path / "out"))


def test_every_status_flag_is_counted(tmp_path):
    """Flags are counted one by one, whatever their name (answer_limit is the categorize step's
    newest; an unknown one must show up too)."""
    rows = [(f"k{i}", 0, f"caption {i}") for i in range(5)]
    caps = write_caption_rows(rows, str(tmp_path / "c.parquet"))
    statuses = ["ok", "answer_limit", "truncated;part_not_in_caption", "part_not_in_caption;brand_new_flag", "ok"]
    entries = [(f"caption {i}", [(f"caption {i}", ["object"])], st) for i, st in enumerate(statuses)]
    labels, aggregate = write_categorized_rows(rows, entries, tmp_path)
    r = build_report([caps], labels, aggregate, str(tmp_path / "out"))
    assert {k: v for k, v in r.metrics.items() if k.startswith("answers_")} == {
        "answers_ok": 2, "answers_answer_limit": 1, "answers_truncated": 1, "answers_part_not_in_caption": 2,
        "answers_brand_new_flag": 1}
    assert "part_not_in_caption: 2" in r.html and "brand_new_flag: 1" in r.markdown


def test_caption_precision_in_the_header(tmp_path):
    from html import unescape

    def header(result) -> str:
        return unescape(result.html[result.html.index("<header>"):result.html.index("</header>")])

    rows = [("k1", 0, "a dog")]
    r = build_report([write_caption_rows(rows, str(tmp_path / "fp32.parquet"))], None, None, str(tmp_path / "a"))
    assert "captions decoded in fp32, the study's method" in header(r) and "Method deviation" not in r.html
    bf16 = write_caption_rows(rows, str(tmp_path / "bf16.parquet"), precision="bf16")
    r = build_report([bf16], None, None, str(tmp_path / "b"))
    assert "Method deviation" in header(r) and "bf16: a deviation from the study's fp32 method" in header(r)
    assert "agreement with fp32 was not measured" in header(r) and "Method deviation" in r.markdown
    measured = write_caption_rows(rows, str(tmp_path / "m.parquet"), precision="bf16",
                         fp32_agreement={"captions_identical_percent": 52.0})
    r = build_report([measured], None, None, str(tmp_path / "c"))
    assert "measured agreement with fp32: captions_identical_percent 52.0" in header(r)
    unknown = write_caption_rows(rows, str(tmp_path / "u.parquet"), precision=None)
    r = build_report([unknown], None, None, str(tmp_path / "d"))
    assert "caption precision: not recorded" in header(r)


def test_one_layer_only(tmp_path):
    rows = [(f"k{i}", 23, f"a dog number {i}") for i in range(5)]
    caps = write_caption_rows(rows, str(tmp_path / "c.parquet"))
    labels, aggregate = write_categorized_rows(rows, [(f"a dog number {i}", [("a dog", ["animal"]), (f"number {i}", ["numbers"])],
                                             "ok") for i in range(5)], tmp_path)
    r = build_report([caps], labels, aggregate, str(tmp_path / "out"))
    assert r.metrics["layers"] == 1 and r.metrics["images"] == 5
    cells = {k: v for k, v in category_cells(r.html).items() if v}
    assert cells == {(23, "animal"): 50.0, (23, "numbers"): 50.0}
    assert r.metrics["median_layer_caption_settles"] == 23
    assert os.path.getsize(tmp_path / "out" / "plots" / "category_share.png") > 1000


def test_a_layer_with_no_valid_labels(tmp_path):
    rows, entries = [], []
    for i in range(4):
        for layer in range(3):
            c = f"caption {i} at layer {layer}"
            rows.append((f"k{i}", layer, c))
            if layer == 1 and i % 2:
                entries.append((c, [], "unparseable"))  # every answer of layer 1 failed ...
            elif layer == 1:  # ... or was cut off: its salvaged parts are shown, not counted
                entries.append((c, [("caption", ["object"])], "truncated;part_not_in_caption"))
            else:
                entries.append((c, [("caption", ["object"]), (f"layer {layer}", ["color" if layer == 0 else "position"])], "ok"))
    caps = write_caption_rows(rows, str(tmp_path / "c.parquet"))
    labels, aggregate = write_categorized_rows(rows, entries, tmp_path)
    r = build_report([caps], labels, aggregate, str(tmp_path / "out"))
    cells = category_cells(r.html)
    assert {v for k, v in cells.items() if k[0] == 1} == {None}  # empty cells: no numbers invented
    assert cells[(0, "color")] == 50.0 and cells[(2, "position")] == 50.0
    assert "no valid labels at layer 1" in r.html and "no valid labels at layer 1" in r.markdown
    assert "do not sum to 100" not in r.markdown
    assert r.metrics["captions_in_shares_percent"] == pytest.approx(100 * 8 / 12)
    # the salvaged parts of a cut-off answer are still coloured in the browser
    data = embedded_data(r.html)
    k = data["captions"].index("caption 0 at layer 1")
    assert data["categories"][data["spans"][k][2]] == "object"


def test_aggregate_for_other_captions_is_refused(tmp_path):
    rows = [("k", 0, "a"), ("k", 1, "b")]
    caps = write_caption_rows(rows, str(tmp_path / "c.parquet"))
    entries = [("a", [("a", ["object"])], "ok"), ("b", [("b", ["object"])], "ok")]
    labels, aggregate = write_categorized_rows([("k", 7, "a"), ("k", 1, "b")], entries, tmp_path)
    with pytest.raises(ValueError, match="layer 7 counts 1 captions, but the captions have 0.*made from other captions"):
        build_report([caps], labels, aggregate, str(tmp_path / "out"))


def test_html_special_characters_are_escaped_never_injected(tmp_path):
    caps, labels, aggregate = hostile_inputs(tmp_path)
    r = build_report([caps], labels, aggregate, str(tmp_path / "out"))
    html = r.html
    # no caption, key or label text appears raw anywhere in the page
    for bad in ("<script>alert", "</script><img", "<img src=x", "<svg onload", "<b>evil", "<b>bold", "img<0>"):
        assert bad not in html, bad
    assert html.count("</script>") == 3  # the data block, the shared helpers and the code block: nothing else closes a script
    # ... and the data survives the round trip exactly
    data = embedded_data(html)
    assert set(data["captions"]) == set(HOSTILE)
    assert data["images"]["keys"][0] == "img<0>&\"'"
    assert "<b>evil label</b>" in data["categories"]
    k = data["captions"].index(HOSTILE[3])
    s = data["spans"][k]
    utf16 = HOSTILE[3].encode("utf-16-le")
    part = utf16[2 * s[0]:2 * s[1]].decode("utf-16-le")  # JavaScript string offsets
    assert part == "🐈 cat"
    assert "&lt;b&gt;evil label&lt;/b&gt;" in html  # in the category table header, escaped


def test_cli_writes_the_report_and_reports_bad_input(reference_tables, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="lverb")
    sub = parser.add_subparsers(dest="command", required=True)
    cli.register(sub)
    args = parser.parse_args(["report", "--captions", reference_tables["captions"], "--labels", reference_tables["labels"],
                              "--aggregate", reference_tables["aggregate"], "--out", str(tmp_path / "r")])
    assert args.func(args) == 0
    assert "500 images x 24 layers" in capsys.readouterr().out
    assert os.path.exists(tmp_path / "r" / "report.html")
    metrics = json.load(open(tmp_path / "r" / "metrics.json"))
    assert all(math.isfinite(v) for v in metrics.values())
    args = parser.parse_args(["report", "--captions", str(tmp_path / "nope.parquet"), "--labels", "x", "--aggregate", "y",
                              "--out", "o"])
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        args.func(args)
    args = parser.parse_args(["report", "--captions", "c", "--labels", "x", "--aggregate", "y", "--out", "o",
                              "--close-f1", "2"])
    with pytest.raises(ValueError, match="--close-f1"):
        args.func(args)


def test_unreadable_image_in_a_shard_is_reported_not_fatal(tmp_path):
    import io
    import tarfile

    caps = write_caption_rows([("good", 0, "a red ball"), ("bad", 0, "a blue ball")], str(tmp_path / "c.parquet"))
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "JPEG")
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for name, data in (("good.jpg", buf.getvalue()), ("bad.jpg", b"\xff\xd8 not really a jpeg"),
                           ("bad.txt", b"a blue ball on the grass")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    r = build_report([caps], None, None, str(tmp_path / "out"), str(tmp_path / "s.tar"))
    data = embedded_data(r.html)
    assert data["images"]["thumbs"][0] and data["images"]["thumbs"][1] == ""
    assert data["images"]["refs"][1] == ["a blue ball on the grass"]
    assert "1 image could not be read for thumbnails: bad" in r.html
    with pytest.raises(FileNotFoundError, match="--images .*no shards match"):
        build_report([caps], None, None, str(tmp_path / "out"), str(tmp_path / "none-*.tar"))
