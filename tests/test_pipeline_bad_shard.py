"""End to end: one garbage shard among good ones. The whole pipeline (kfp.local, every step in a
subprocess through the real components, offline models) finishes: extract records the bad shard
as failed instead of failing the ParallelFor, caption passes the record on, categorize labels the
shards that finished, and the report names the bad shard and its reason at the top of the page,
in summary.md and in the failed_shards metric."""

from __future__ import annotations

import glob
import json
import os
from importlib import resources

from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.contracts import CAPTIONS_SCHEMA, LABELS_SCHEMA
from latent_verbalizer.components.common.tables import read_table
from latent_verbalizer.components.extract.shards import write_shards
from latent_verbalizer.pipeline.local import run_local


def test_a_garbage_shard_fails_alone_and_the_report_names_it(tmp_path):
    with resources.as_file(resources.files("latent_verbalizer.pipeline") / "sample_images") as folder:
        photos = sorted(p for p in os.listdir(folder) if p.endswith(".jpg"))[:6]
        (tmp_path / "photos").mkdir()
        for name in photos:
            os.symlink(os.path.join(folder, name), tmp_path / "photos" / name)
    shards = write_shards(str(tmp_path / "photos"), str(tmp_path / "shards"), per_shard=2, prefix="x")
    bad = str(tmp_path / "shards" / "x-000001.tar")
    assert len(shards) == 3 and shards[1] == bad
    with open(bad, "wb") as f:
        f.write(os.urandom(20_000))  # random bytes with a shard's name
    params = {"shards": str(tmp_path / "shards" / "x-{000000..000002}.tar"), "extract_layers": "0,5",
              "categorize_model": "tiny-random-llama"}  # answers of at most 5 parts (the local default)

    run = run_local(params, workdir=str(tmp_path / "work"), cache=False)

    prefix = run["storage_prefix"]
    captions = [row for name in ("x-000000", "x-000002") for row in
                read_table(storage.join(prefix, "captions", name, "captions.parquet"), CAPTIONS_SCHEMA).to_pylist()]
    assert len(captions) == 4 * 2 and not storage.exists(storage.join(prefix, "captions", "x-000001"))
    labels = read_table(storage.join(prefix, "labels", "labels.parquet"), LABELS_SCHEMA).to_pylist()
    assert {r["caption"] for r in labels} == {r["caption"] for r in captions}

    reason = f"{bad} is not a tar archive"
    html = storage.read_bytes(run["report"]).decode()
    main = html[html.index("<main>"):]
    assert main.index(f"shard {bad} failed at extract and is left out of this report: {reason}") < main.index("<section")
    assert "4 images x 2 layers" in html
    summary = storage.read_bytes(storage.join(prefix, "report", "summary.md")).decode()
    assert "**1 shard failed** and is left out of this report:" in summary
    assert "x-000001.tar (extract): " in summary and "is not a tar archive" in summary
    metrics = json.loads(storage.read_bytes(storage.join(prefix, "report", "metrics.json")))
    assert metrics["failed_shards"] == 1 and metrics["images"] == 4

    # what the caption step handed on for the bad shard: the record, not data
    pointers = [json.load(open(p)) for p in glob.glob(os.path.join(run["pipeline_root"], "**", "captions"),
                                                      recursive=True) if os.path.isfile(p)]
    assert sorted(p.get("step", "done") for p in pointers) == ["done", "done", "extract"]
    (failed,) = [p for p in pointers if "failed" in p]
    assert failed["shard"] == bad and failed["failed"].startswith(reason)
