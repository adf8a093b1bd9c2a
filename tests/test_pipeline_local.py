"""End to end: ``lverb run --local`` (kfp.local, every step in a subprocess through the real
components) with bulk data on a real S3 server, offline models; then the same run again
skips the finished work."""

import builtins
import glob
import json
import os
import re

from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.contracts import AGGREGATE_SCHEMA, CAPTIONS_SCHEMA, LABELS_SCHEMA
from latent_verbalizer.components.common.tables import read_table
from latent_verbalizer.pipeline.local import run_local

LAYERS = [0, 3, 5]


def last_modified(uri):
    loc = storage.parse_s3(uri)
    return storage.s3_client().head_object(Bucket=loc.bucket, Key=loc.key)["LastModified"]


def labels_summary(workdir):
    (path,) = glob.glob(os.path.join(workdir, "kfp", "*", "for-loop-*", "categorize-captions", "labels"))  # one partition
    return json.load(open(path))["summary"]


def test_local_run_on_s3_then_rerun_skips_finished_work(s3_bucket, tmp_path, capfd):
    prefix = s3_bucket + "/run"
    params = {"extract_layers": ",".join(map(str, LAYERS)), "categorize_model": "tiny-random-llama"}
    print_before = builtins.print
    first = run_local(params, workdir=str(tmp_path / "w1"), storage_prefix=prefix, cache=False)
    assert builtins.print is print_before, "kfp.local's per-task print indentation is undone after the run"

    # The terminal gets a line per step (with the step's rate), KFP's dumps go to the run's log file.
    out = capfd.readouterr().out
    steps = [line for line in out.splitlines() if re.match(r"  [a-z-]+ +done +[\d.]+s", line)]
    assert [s.split()[0] for s in steps].count("extract-shard") == 2 and len(steps) == 9, out
    assert all("captions/s" in s for s in steps if s.split()[0] == "caption-shard"), out
    assert len(out.splitlines()) < 15 and "executor_input" not in out, out
    assert "Got executor_input" in open(first["log"]).read()
    # Every step wrote under the run's prefix (kfp.local once handed the loop's steps the shard URI instead).
    assert not [u for u in storage.list_uris(s3_bucket) if not u.startswith(prefix + "/")]
    shards = storage.expand_pattern(first["params"]["shards"])
    assert len(shards) == 2 and all(s.startswith(s3_bucket) for s in shards)

    captions = []
    for name in ("sample-000000", "sample-000001"):
        table = read_table(f"{prefix}/captions/{name}/captions.parquet", CAPTIONS_SCHEMA)
        captions += table.to_pylist()
    keys = {r["image_key"] for r in captions}
    assert len(keys) == 8
    assert sorted((r["image_key"], r["layer"]) for r in captions) == sorted((k, l) for k in keys for l in LAYERS)

    labels = read_table(prefix + "/labels/labels.parquet", LABELS_SCHEMA).to_pylist()
    assert {r["caption"] for r in labels} == {r["caption"] for r in captions}, "every caption has labels"
    assert all(r["parts"] is not None for r in labels)
    aggregate = read_table(prefix + "/labels/aggregate.parquet", AGGREGATE_SCHEMA)
    assert set(aggregate.column("layer").to_pylist()) == set(LAYERS)
    html = storage.read_bytes(first["report"]).decode()
    assert "<html" in html.lower() and f"8 images x {len(LAYERS)} layers" in html
    assert storage.exists(prefix + "/report/plots/category_share.png")

    # the same run again: nothing is recomputed (objects untouched, no caption relabelled)
    before = {uri: last_modified(uri) for uri in storage.list_uris(prefix + "/features") + storage.list_uris(prefix + "/captions")}
    second = run_local(dict(params, shards=first["params"]["shards"]), workdir=str(tmp_path / "w2"), storage_prefix=prefix,
                       cache=False)
    after = {uri: last_modified(uri) for uri in before}
    assert after == before
    summary = labels_summary(str(tmp_path / "w2"))
    assert summary["to_label"] == 0 and summary["resumed"] == len({r["caption"] for r in captions})
    assert storage.exists(second["report"])
