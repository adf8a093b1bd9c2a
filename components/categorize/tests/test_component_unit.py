"""The categorize KFP wrapper through ``.python_func`` (as kubeflow/pipelines-components'
tests do): caption manifests in, the labels manifest out, with tiny-random on CPU."""

from __future__ import annotations

import json

import pytest
from kfp import dsl

from latent_verbalizer.components.categorize.component import make_categorize_op
from latent_verbalizer.components.common.contracts import AGGREGATE_SCHEMA, LABELS_SCHEMA, read_table
from tests.captions_by_layer import write_captions


def test_wrapper_maps_manifests_to_labels(tmp_path):
    captions_uri = str(tmp_path / "store" / "captions" / "shard-000.parquet")
    write_captions(captions_uri, {0: ["a dog", "red red"], 23: ["a dog", "a cat"]})
    manifest = tmp_path / "captions-manifest.json"
    manifest.write_text(json.dumps({"captions": captions_uri}))
    labels = dsl.Dataset(uri=str(tmp_path / "labels-manifest.json"))

    make_categorize_op("unused:tag").python_func(
        captions=[dsl.Dataset(uri=str(manifest))], storage_prefix=str(tmp_path / "store"), model="tiny-random",
        gpus=1, batch_size="2", labels=labels)

    pointer = json.loads((tmp_path / "labels-manifest.json").read_text())
    out = tmp_path / "store" / "labels"
    assert pointer["labels"] == str(out / "labels.parquet") and pointer["aggregate"] == str(out / "aggregate.parquet")
    assert pointer["captions"] == [captions_uri]
    assert pointer["summary"]["unique_captions"] == 3 and pointer["summary"]["batch_size"] == 2
    assert labels.metadata["unique_captions"] == 3 and labels.metadata["labels"] == pointer["labels"]
    assert sorted(read_table(pointer["labels"], LABELS_SCHEMA).column("caption").to_pylist()) == ["a cat", "a dog", "red red"]
    assert set(read_table(pointer["aggregate"], AGGREGATE_SCHEMA).column("layer").to_pylist()) == {0, 23}


def test_failed_shards_are_left_out_and_all_failed_is_an_error(tmp_path):
    captions_uri = str(tmp_path / "store" / "captions" / "shard-000.parquet")
    write_captions(captions_uri, {0: ["a dog"]})
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"captions": captions_uri}))
    bad.write_text(json.dumps({"failed": "x-000001.tar is not a tar archive", "shard": "x-000001.tar", "step": "extract"}))
    labels = dsl.Dataset(uri=str(tmp_path / "labels-manifest.json"))
    run = make_categorize_op("unused:tag").python_func
    params = dict(storage_prefix=str(tmp_path / "store"), model="tiny-random", gpus=1, batch_size="2", labels=labels)

    run(captions=[dsl.Dataset(uri=str(bad)), dsl.Dataset(uri=str(good))], **params)
    pointer = json.loads((tmp_path / "labels-manifest.json").read_text())
    assert pointer["captions"] == [captions_uri] and pointer["summary"]["unique_captions"] == 1
    with pytest.raises(ValueError, match="every shard failed, nothing to label: x-000001.tar \\(extract\\): "
                                         "x-000001.tar is not a tar archive"):
        run(captions=[dsl.Dataset(uri=str(bad))], **params)
