"""Inputs at the edges: empty, one layer, a layer without valid labels, hostile caption text."""

from __future__ import annotations

import argparse
import json
import math
import os

import pyarrow as pa
import pytest

from latent_verbalizer.components.common.contracts import (
    AGGREGATE_SCHEMA,
    CAPTIONS_SCHEMA,
    LABELS_SCHEMA,
    provenance,
    write_table,
)
from latent_verbalizer.components.report import cli
from latent_verbalizer.components.report.report import build_report
from latent_verbalizer.components.report.tests.page_parsing import category_cells, embedded_data

HOSTILE = [
    "<script>alert(1)</script>",
    "a cat </script><img src=x onerror=alert(2)> on a mat",
    'a "quoted" & <b>bold</b> dog \u2028 with <!-- comment --> and ]]>',
    "emoji 🐈 cat and \u00e9t\u00e9 <svg onload=alert(3)>",
]


def _captions(rows: list[tuple[str, int, str]], path: str, entropy: float = 3.0) -> str:
    t = pa.table({
        "image_key": [r[0] for r in rows], "shard": ["s0"] * len(rows), "layer": [r[1] for r in rows],
        "caption": [r[2] for r in rows], "token_ids": [[1, 2, 3]] * len(rows), "n_tokens": [3] * len(rows),
        "stop": ["eos"] * len(rows), "entropy_bits": [entropy + r[1] for r in rows], "mean_logprob": [-1.0] * len(rows),
    }, schema=CAPTIONS_SCHEMA)
    write_table(path, t, CAPTIONS_SCHEMA, "latent-verbalizer/captions", 1, provenance(model="m<x>"))
    return path


def _labels(entries: list[tuple[str, list[tuple[str, list[str]]], str]], path: str) -> str:
    t = pa.table({
        "caption": [e[0] for e in entries],
        "parts": [[{"text": p, "labels": labs} for p, labs in e[1]] for e in entries],
        "model": ["llm"] * len(entries), "status": [e[2] for e in entries],
    }, schema=LABELS_SCHEMA)
    write_table(path, t, LABELS_SCHEMA, "latent-verbalizer/labels", 1, provenance())
    return path


def test_no_captions_given_or_found(tmp_path):
    with pytest.raises(ValueError, match="no captions tables given"):
        build_report([], None, None, str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="--captions .*missing.parquet.*no such file"):
        build_report([str(tmp_path / "missing.parquet")], None, None, str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="pattern matches nothing"):
        build_report([str(tmp_path / "cap-*.parquet")], None, None, str(tmp_path / "out"))


def test_empty_captions_table_is_a_clear_error(tmp_path):
    path = _captions([], str(tmp_path / "c.parquet"))
    with pytest.raises(ValueError, match="no caption rows at all"):
        build_report([path], None, None, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / "report.html")


def test_wrong_table_is_named(tmp_path):
    labels = _labels([("a dog", [("a dog", ["animal"])], "ok")], str(tmp_path / "labels.parquet"))
    with pytest.raises(ValueError, match="labels.parquet: not a captions table.*missing columns"):
        build_report([labels], None, None, str(tmp_path / "out"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="junk.parquet: not a readable Parquet"):
        build_report([str(tmp_path / "junk.parquet")], None, None, str(tmp_path / "out"))


def test_captions_without_labels_and_empty_labels_table(tmp_path):
    caps = _captions([("k1", 0, "red red red"), ("k1", 1, "a red car")], str(tmp_path / "c.parquet"))
    r = build_report([caps], None, None, str(tmp_path / "a"))
    assert "No labels given" in r.html and r.metrics["images"] == 1
    empty = _labels([], str(tmp_path / "l.parquet"))
    r = build_report([caps], empty, None, str(tmp_path / "b"))
    assert "No caption has a valid labelled part" in r.html
    assert r.metrics["captions_unlabelled"] == 2 and r.metrics["answers_valid_percent"] == 0.0


def test_one_layer_only(tmp_path):
    caps = _captions([(f"k{i}", 23, f"a dog number {i}") for i in range(5)], str(tmp_path / "c.parquet"))
    labels = _labels([(f"a dog number {i}", [("a dog", ["animal"]), (f"number {i}", ["numbers"])], "ok")
                      for i in range(5)], str(tmp_path / "l.parquet"))
    r = build_report([caps], labels, None, str(tmp_path / "out"))
    assert r.metrics["layers"] == 1 and r.metrics["images"] == 5
    cells = category_cells(r.html)
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
    caps = _captions(rows, str(tmp_path / "c.parquet"))
    labels = _labels(entries, str(tmp_path / "l.parquet"))
    r = build_report([caps], labels, None, str(tmp_path / "out"))
    cells = category_cells(r.html)
    assert [v for k, v in cells.items() if k[0] == 1] == [None] * 3  # empty cells: no numbers invented
    assert cells[(0, "color")] == 50.0 and cells[(2, "position")] == 50.0
    assert "no valid labels at layer 1" in r.html and "no valid labels at layer 1" in r.markdown
    assert r.metrics["answers_valid_percent"] == pytest.approx(100 * 8 / 12)
    # an aggregate that lists layer 1 with n_captions 0 (as the categorize step writes it): a gap too
    agg = pa.table({"layer": [0, 0, 1, 1, 2, 2], "category": ["objects", "color"] * 2 + ["objects", "position"],
                    "share_percent": [50.0, 50.0, 0.0, 0.0, 50.0, 50.0], "n_captions": [4, 4, 0, 0, 4, 4]},
                   schema=AGGREGATE_SCHEMA)
    write_table(str(tmp_path / "agg.parquet"), agg, AGGREGATE_SCHEMA, "latent-verbalizer/labels", 1, provenance())
    r2 = build_report([caps], labels, str(tmp_path / "agg.parquet"), str(tmp_path / "out2"))
    assert "no valid labels at layer 1" in r2.markdown and "do not sum to 100" not in r2.markdown
    assert [v for k, v in category_cells(r2.html).items() if k[0] == 1] == [None] * 3


def test_aggregate_for_other_captions_is_refused(tmp_path):
    caps = _captions([("k", 0, "a"), ("k", 1, "b")], str(tmp_path / "c.parquet"))
    agg = pa.table({"layer": [7], "category": ["x"], "share_percent": [100.0], "n_captions": [1]}, schema=AGGREGATE_SCHEMA)
    write_table(str(tmp_path / "agg.parquet"), agg, AGGREGATE_SCHEMA, "latent-verbalizer/labels", 1, provenance())
    with pytest.raises(ValueError, match="aggregate table has layer 7"):
        build_report([caps], None, str(tmp_path / "agg.parquet"), str(tmp_path / "out"))


def hostile_inputs(tmp_path) -> tuple[str, str]:
    rows = [(f"img<{i}>&\"'", layer, HOSTILE[(i + layer) % len(HOSTILE)]) for i in range(3) for layer in range(2)]
    caps = _captions(rows, str(tmp_path / "c.parquet"))
    labels = _labels([
        (HOSTILE[0], [("<script>", ["<b>evil label</b>"]), ("alert(1)", ["actions"])], "ok"),
        (HOSTILE[1], [("</script><img src=x onerror=alert(2)>", ["object"])], "ok"),
        (HOSTILE[2], [("& <b>bold</b>", ["style"])], "part_not_in_caption"),
        (HOSTILE[3], [("🐈 cat", ["animal"]), ("<svg onload=alert(3)>", ["shape"])], "ok"),
    ], str(tmp_path / "l.parquet"))
    return caps, labels


def test_html_special_characters_are_escaped_never_injected(tmp_path):
    caps, labels = hostile_inputs(tmp_path)
    r = build_report([caps], labels, None, str(tmp_path / "out"))
    html = r.html
    # no caption, key or label text appears raw anywhere in the page
    for bad in ("<script>alert", "</script><img", "<img src=x", "<svg onload", "<b>evil", "<b>bold", "img<0>"):
        assert bad not in html, bad
    assert html.count("</script>") == 2  # the data block and the code block, nothing else closes a script
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
    args = parser.parse_args(["report", "--captions", str(tmp_path / "nope.parquet"), "--labels", "x", "--out", "o"])
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        args.func(args)
    args = parser.parse_args(["report", "--captions", "c", "--labels", "x", "--out", "o", "--close-f1", "2"])
    with pytest.raises(ValueError, match="--close-f1"):
        args.func(args)


def test_unreadable_image_in_a_shard_is_reported_not_fatal(tmp_path):
    import io
    import tarfile

    caps = _captions([("good", 0, "a red ball"), ("bad", 0, "a blue ball")], str(tmp_path / "c.parquet"))
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
