"""Issue 20: the labelling split in 3 partitions (kfp.local, the real pipeline and components,
tiny random models, 2 images) gives exactly the labels table, the aggregate and the report's
tables of the same run in 1 partition."""

import glob
import json
import os

from latent_verbalizer.components.common.contracts import AGGREGATE_SCHEMA, LABELS_SCHEMA
from latent_verbalizer.components.common.tables import read_table, table_metadata
from latent_verbalizer.pipeline.local import run_local
from tests.images import jpeg_shard

REPORT_TABLES = ("category_share.csv", "layer_stats.csv")


def test_three_partitions_give_the_tables_of_one(tmp_path):
    (tmp_path / "in").mkdir()
    shards = jpeg_shard(str(tmp_path / "in" / "two-000000.tar"), 2)
    params = {"shards": shards, "extract_layers": "0,3", "categorize_model": "tiny-random-llama"}
    runs = {}
    for count in (1, 3):
        runs[count] = run_local(dict(params, categorize_partitions=count), workdir=str(tmp_path / f"w{count}"),
                                cache=False)["storage_prefix"]
    one, three = (os.path.join(runs[n], "labels") for n in (1, 3))
    assert sorted(n for n in os.listdir(three) if n.startswith("partition-")) == [
        "partition-001-of-003", "partition-002-of-003", "partition-003-of-003"]
    per_partition = [read_table(os.path.join(three, f"partition-00{i}-of-003", "labels.parquet"), LABELS_SCHEMA)
                     for i in (1, 2, 3)]
    labels = read_table(os.path.join(three, "labels.parquet"), LABELS_SCHEMA)
    assert sum(t.num_rows for t in per_partition) == labels.num_rows > 0, "each distinct caption labelled once"

    for name, schema in (("labels.parquet", LABELS_SCHEMA), ("aggregate.parquet", AGGREGATE_SCHEMA)):
        ours, theirs = read_table(os.path.join(three, name), schema), read_table(os.path.join(one, name), schema)
        if name == "labels.parquet":  # a row per caption: the same rows, in partition order
            assert ours.num_rows == theirs.num_rows
            ours, theirs = ours.sort_by("caption"), theirs.sort_by("caption")
        assert ours.num_rows and ours.equals(theirs), name
        assert table_metadata(ours)["parameters"]["partitions"] == 3
        assert table_metadata(theirs)["parameters"]["partitions"] == 1
    for name in REPORT_TABLES:
        ours, theirs = (open(os.path.join(runs[n], "report", name)).read() for n in (3, 1))
        assert ours == theirs and len(ours.splitlines()) > 2, name
    summary = json.load(open(os.path.join(three, "summary.json")))
    assert summary["partitions"] == 3 and summary["unique_captions"] == labels.num_rows
    # the first step's run-size page says what the run starts
    (page,) = glob.glob(str(tmp_path / "w3" / "kfp" / "*" / "list-shards" / "run_size"))
    text = open(page).read()
    assert "| images | 2 |" in text and "| (image, layer) captions | 4 |" in text
    assert "| categorize | 3 (one per partition) | 1 | 3 (3 GPUs) |" in text
