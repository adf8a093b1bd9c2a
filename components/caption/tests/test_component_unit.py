"""The KFP wrapper of caption, called as a plain function (``.python_func``): the features
pointer read, parameters mapped (float32 by default in the study's method, bf16 opt-in),
the captions pointer written (as kubeflow/pipelines-components' ``tests/test_component_unit.py`` does)."""

from __future__ import annotations

import json
import shutil

import pytest
from kfp.dsl import Artifact, Dataset

from latent_verbalizer.components.caption.component import make_caption_op
from latent_verbalizer.components.common.contracts import CAPTIONS_SCHEMA
from latent_verbalizer.components.common.features import CorruptChunkError, read_manifest
from latent_verbalizer.components.common.tables import read_table, table_metadata
from latent_verbalizer.components.extract.extract import ExtractSettings, run_extract
from tests.images import jpeg_shard


@pytest.fixture(scope="module")
def features_pointer(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("caption-unit")
    shard = jpeg_shard(str(root / "u-000000.tar"), 2)
    run_extract([shard], str(root / "run" / "features"), ExtractSettings(model="tiny-random-coca", device="cpu", layers="1,4"))
    pointer = root / "features.json"
    pointer.write_text(json.dumps({"features": str(root / "run" / "features" / "u-000000"), "shard": shard}))
    return str(pointer)


def caption(tmp_path, features_pointer: str, **overrides) -> Dataset:
    captions = Dataset(name="captions", uri=str(tmp_path / "captions.json"), metadata={})
    params = dict(storage_prefix=str(tmp_path / "run"), layers="all", precision="float32", batch_size="3",
                  seq_len=30.0, min_seq_len=5.0, pretrained="")  # KFP may hand numbers over as floats
    features = Artifact(name="features", uri=features_pointer, metadata={})
    make_caption_op("unused-image").python_func(features=features, **{**params, **overrides}, captions=captions)
    return captions


def test_wrapper_maps_parameters_and_writes_the_pointer(tmp_path, features_pointer):
    captions = caption(tmp_path, features_pointer)
    pointer = json.loads(open(captions.path).read())
    shard = json.loads(open(features_pointer).read())["shard"]
    assert pointer == {"captions": str(tmp_path / "run" / "captions" / "u-000000" / "captions.parquet"), "rows": 4,
                       "images": 2, "layers": [1, 4], "skipped": [], "shard": shard}
    assert captions.metadata["rows"] == 4 and "skipped" not in captions.metadata
    meta = table_metadata(read_table(pointer["captions"], CAPTIONS_SCHEMA))
    assert meta["parameters"]["precision"] == "float32" and meta["parameters"]["tf32"] is False


def test_wrapper_takes_the_short_spelling_and_refuses_auto(tmp_path, features_pointer):
    captions = caption(tmp_path, features_pointer, precision="bf16", layers="4")
    meta = table_metadata(read_table(json.loads(open(captions.path).read())["captions"], CAPTIONS_SCHEMA))
    assert meta["parameters"]["precision"] == "bfloat16" and "tf32" not in meta["parameters"]
    with pytest.raises(ValueError, match="--precision 'auto': use one of float32, bfloat16"):
        caption(tmp_path / "again", features_pointer, precision="auto")


def test_a_failed_shard_is_passed_on_without_loading_a_model(tmp_path):
    failed = {"failed": "s-000001.tar is not a tar archive", "shard": "s3://b/s-000001.tar", "step": "extract"}
    pointer_path = tmp_path / "features.json"
    pointer_path.write_text(json.dumps(failed))
    # no features to read, no model to load: nothing is written under the run's prefix
    captions = caption(tmp_path, str(pointer_path))
    assert json.loads(open(captions.path).read()) == failed
    assert not (tmp_path / "run").exists()
    with pytest.raises(RuntimeError, match="s3://b/s-000001.tar failed at extract: s-000001.tar is not a tar archive"):
        caption(tmp_path, str(pointer_path), fail_on_bad_shard=True)


def test_features_failing_their_checksums_record_the_shard_as_failed(tmp_path, features_pointer):
    pointer = json.loads(open(features_pointer).read())
    damaged = tmp_path / "features" / "u-000000"
    shutil.copytree(pointer["features"], damaged)
    (info,) = read_manifest(str(damaged)).objects
    chunk = damaged / info.key
    data = bytearray(chunk.read_bytes())
    data[-10] ^= 0x01  # inside the last layer's tensor
    chunk.write_bytes(bytes(data))
    (tmp_path / "damaged.json").write_text(json.dumps(dict(pointer, features=str(damaged))))

    captions = caption(tmp_path, str(tmp_path / "damaged.json"))
    result = json.loads(open(captions.path).read())
    assert set(result) == {"failed", "shard", "step"} and result["shard"] == pointer["shard"]
    assert result["step"] == "caption" and str(chunk) in result["failed"] and "re-run extract" in result["failed"]
    with pytest.raises(CorruptChunkError, match="re-run extract"):
        caption(tmp_path / "again", str(tmp_path / "damaged.json"), fail_on_bad_shard=True)
