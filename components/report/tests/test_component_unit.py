"""The report's KFP wrapper, called through ``.python_func`` with real artifacts and tables."""

from __future__ import annotations

import json

from kfp import dsl

from latent_verbalizer.components.report.component import make_report_op
from tests.images import encode, random_rgb, write_tar
from tests.page_parsing import category_cells, embedded_data
from tests.small_report_inputs import write_caption_rows, write_categorized_rows


def _pointer(path, content: dict) -> dsl.Dataset:
    path.write_text(json.dumps(content))
    return dsl.Dataset(uri=str(path))


def test_wrapper_reads_the_pointers_and_fills_every_output(tmp_path):
    rows = [(f"k{i}", layer, f"a {'red' if layer else 'blue'} thing {i}") for i in range(4) for layer in (0, 1)]
    first = write_caption_rows(rows[:4], str(tmp_path / "captions-0.parquet"))
    second = write_caption_rows(rows[4:], str(tmp_path / "captions-1.parquet"))
    entries = [(c, [(c.rsplit(" ", 1)[0], ["color"])], "ok") for _, _, c in rows]
    labels, aggregate = write_categorized_rows(rows, entries, tmp_path / "labels")
    shard = write_tar(str(tmp_path / "shard-000000.tar"), [(f"k{i}.jpg", encode(random_rgb(), "JPEG")) for i in range(4)])
    report, summary, metrics = (dsl.HTML(uri=str(tmp_path / "report.html")),
                                dsl.Markdown(uri=str(tmp_path / "summary.md")), dsl.Metrics(uri=str(tmp_path / "m")))

    make_report_op("unused-image").python_func(
        captions=[_pointer(tmp_path / "c0.json", {"captions": first}), _pointer(tmp_path / "c1.json", {"captions": second})],
        labels=_pointer(tmp_path / "l.json", {"labels": labels, "aggregate": aggregate}),
        storage_prefix=str(tmp_path / "prefix"), shards=shard, report=report, summary=summary, metrics=metrics,
    )

    html = open(report.path, encoding="utf-8").read()
    assert html == open(tmp_path / "prefix" / "report" / "report.html", encoding="utf-8").read()
    data = embedded_data(html)
    assert data["images"]["keys"] == ["k0", "k1", "k2", "k3"] and all(data["images"]["thumbs"])
    assert category_cells(html)[(1, "color")] == 100.0
    assert open(summary.path).read().startswith("# latent-verbalizer report\n\n4 images x 2 layers = 8 captions")
    assert metrics.metadata["images"] == 4.0 and metrics.metadata["captions_in_shares_percent"] == 100.0
    assert metrics.metadata == json.load(open(tmp_path / "prefix" / "report" / "metrics.json"))


def test_wrapper_without_shards_embeds_no_thumbnails(tmp_path):
    rows = [("k0", 0, "a dog")]
    caps = write_caption_rows(rows, str(tmp_path / "captions.parquet"))
    labels, aggregate = write_categorized_rows(rows, [("a dog", [("a dog", ["animal"])], "ok")], tmp_path / "labels")
    report = dsl.HTML(uri=str(tmp_path / "report.html"))
    make_report_op("unused-image").python_func(
        captions=[_pointer(tmp_path / "c.json", {"captions": caps})],
        labels=_pointer(tmp_path / "l.json", {"labels": labels, "aggregate": aggregate}),
        storage_prefix=str(tmp_path / "prefix"), shards="", report=report,
        summary=dsl.Markdown(uri=str(tmp_path / "s.md")), metrics=dsl.Metrics(uri=str(tmp_path / "m")),
    )
    assert embedded_data(open(report.path, encoding="utf-8").read())["images"]["thumbs"] is None


def test_failed_shards_are_listed_first_on_the_page_in_the_summary_and_the_metrics(tmp_path):
    rows = [(f"k{i}", layer, f"a red thing {i}") for i in range(2) for layer in (0, 1)]
    caps = write_caption_rows(rows, str(tmp_path / "captions-0.parquet"))
    labels, aggregate = write_categorized_rows(rows, [(c, [(c, ["color"])], "ok") for _, _, c in rows], tmp_path / "labels")
    write_tar(str(tmp_path / "x-000000.tar"), [(f"k{i}.jpg", encode(random_rgb(), "JPEG")) for i in range(2)])
    bad = tmp_path / "x-000001.tar"
    bad.write_bytes(b"random bytes, not a tar" * 40)  # in the pattern too: the report must not read it
    reason = f"{bad} is not a tar archive (invalid header); webdataset shards are .tar files"
    report, summary, metrics = (dsl.HTML(uri=str(tmp_path / "report.html")),
                                dsl.Markdown(uri=str(tmp_path / "summary.md")), dsl.Metrics(uri=str(tmp_path / "m")))

    make_report_op("unused-image").python_func(
        captions=[_pointer(tmp_path / "c0.json", {"captions": caps}),
                  _pointer(tmp_path / "c1.json", {"failed": reason, "shard": str(bad), "step": "extract"})],
        labels=_pointer(tmp_path / "l.json", {"labels": labels, "aggregate": aggregate}),
        storage_prefix=str(tmp_path / "prefix"), shards=str(tmp_path / "x-{000000..000001}.tar"),
        report=report, summary=summary, metrics=metrics,
    )

    html = open(report.path, encoding="utf-8").read()
    main = html[html.index("<main>"):]
    first_warning = main[main.index('<div class="warn">'):]
    assert first_warning.startswith(f'<div class="warn">shard {bad} failed at extract and is left out of this '
                                    f"report: {reason}</div>")
    assert main.index(str(bad)) < main.index('<section'), "at the top, before any section"
    assert "could not be read for thumbnails" not in html  # the failed shard is not read again
    assert all(embedded_data(html)["images"]["thumbs"])
    text = open(summary.path).read()
    assert text.startswith("# latent-verbalizer report\n\n**1 shard failed** and is left out of this report:\n\n- ")
    assert "x-000001.tar (extract): " in text and "is not a tar archive" in text
    assert metrics.metadata["failed_shards"] == 1.0 and metrics.metadata["images"] == 2.0
