"""The labelling's KFP wrappers through ``.python_func`` (as kubeflow/pipelines-components'
tests do): caption manifests in, partitions named, each partition labelled, the merged labels
manifest out, with tiny-random-llama on CPU."""

from __future__ import annotations

import json

import pytest
from kfp import dsl

from latent_verbalizer.components.categorize.component import make_categorize_op, make_merge_op, make_partition_op
from latent_verbalizer.components.common.contracts import AGGREGATE_SCHEMA, LABELS_SCHEMA
from latent_verbalizer.components.common.tables import read_table
from tests.captions_by_layer import write_captions

partition_captions = make_partition_op("unused:tag").python_func
categorize_captions = make_categorize_op("unused:tag").python_func
merge_label_partitions = make_merge_op("unused:tag").python_func


def test_wrappers_map_manifests_to_partitions_and_merged_labels(tmp_path):
    captions_uri = str(tmp_path / "store" / "captions" / "shard-000.parquet")
    write_captions(captions_uri, {0: ["a dog", "red red"], 23: ["a dog", "a cat"]})
    manifest = tmp_path / "captions-manifest.json"
    manifest.write_text(json.dumps({"captions": captions_uri}))
    collected = dsl.Dataset(uri=str(tmp_path / "collected.json"))

    names = partition_captions(captions=[dsl.Dataset(uri=str(manifest))], partitions=2, collected=collected)
    assert names == ["partition-001-of-002", "partition-002-of-002"]
    pointers = []
    for name in names:
        pointers.append(dsl.Dataset(uri=str(tmp_path / f"{name}.json")))
        categorize_captions(captions=collected, partition=name, storage_prefix=str(tmp_path / "store"),
                            model="tiny-random-llama", gpus=1, batch_size="2", labels=pointers[-1])
        partition = json.loads(open(pointers[-1].path).read())
        assert partition["labels"] == str(tmp_path / "store" / "labels" / name / "labels.parquet")
    per_partition = [json.loads(open(p.path).read())["summary"]["unique_captions"] for p in pointers]
    assert sum(per_partition) == 3

    labels = dsl.Dataset(uri=str(tmp_path / "labels-manifest.json"))
    merge_label_partitions(captions=collected, partitions=pointers[::-1], storage_prefix=str(tmp_path / "store"),
                           labels=labels)
    pointer = json.loads((tmp_path / "labels-manifest.json").read_text())
    out = tmp_path / "store" / "labels"
    assert pointer["labels"] == str(out / "labels.parquet") and pointer["aggregate"] == str(out / "aggregate.parquet")
    assert pointer["captions"] == [captions_uri]
    assert pointer["summary"]["unique_captions"] == 3 and pointer["summary"]["partitions"] == 2
    assert labels.metadata["unique_captions"] == 3 and labels.metadata["labels"] == pointer["labels"]
    assert read_table(pointer["labels"], LABELS_SCHEMA).column("caption").to_pylist() == ["a dog", "red red", "a cat"]
    assert set(read_table(pointer["aggregate"], AGGREGATE_SCHEMA).column("layer").to_pylist()) == {0, 23}
    with pytest.raises(ValueError, match="expected every partition of one count, once each"):
        merge_label_partitions(captions=collected, partitions=pointers[:1], storage_prefix=str(tmp_path / "store"),
                               labels=labels)


def test_failed_shards_are_left_out_and_all_failed_is_an_error(tmp_path):
    captions_uri = str(tmp_path / "store" / "captions" / "shard-000.parquet")
    write_captions(captions_uri, {0: ["a dog"]})
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"captions": captions_uri}))
    bad.write_text(json.dumps({"failed": "x-000001.tar is not a tar archive", "shard": "x-000001.tar", "step": "extract"}))
    collected = dsl.Dataset(uri=str(tmp_path / "collected.json"))

    partition_captions(captions=[dsl.Dataset(uri=str(bad)), dsl.Dataset(uri=str(good))], partitions=1, collected=collected)
    assert json.loads(open(collected.path).read())["captions"] == [captions_uri]
    assert collected.metadata == {"shards": 1, "failed_shards": 1, "partitions": 1}
    with pytest.raises(ValueError, match="every shard failed, nothing to label: x-000001.tar \\(extract\\): "
                                         "x-000001.tar is not a tar archive"):
        partition_captions(captions=[dsl.Dataset(uri=str(bad))], partitions=1, collected=collected)
    with pytest.raises(ValueError, match="categorize_partitions=0 is not a partition count"):
        partition_captions(captions=[dsl.Dataset(uri=str(good))], partitions=0, collected=collected)
