"""The KFP wrapper of extract, called as a plain function (``.python_func``): parameters
mapped, the pointer artifact written, failures raised (as kubeflow/pipelines-components'
``tests/test_component_unit.py`` does)."""

from __future__ import annotations

import json
import socket

import pytest
from kfp.dsl import Artifact

from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.contracts import FailedShard
from latent_verbalizer.components.common.devices import REQUIRE_GPU_ENV, GpuNotVisibleError
from latent_verbalizer.components.common.features import read_manifest
from latent_verbalizer.components.common.storage import StorageError
from latent_verbalizer.components.common.tar_samples import ShardError
from latent_verbalizer.components.extract.component import make_extract_op
from tests.images import jpeg_shard


def extract(tmp_path, shard: str, **overrides) -> Artifact:
    features = Artifact(name="features", uri=str(tmp_path / "features.json"), metadata={})
    params = dict(shard=shard, storage_prefix=str(tmp_path / "run"), model="tiny-random-coca", pretrained="", layers="0,3",
                  dtype="fp16", batch_size="2")
    make_extract_op("unused-image").python_func(**{**params, **overrides}, features=features)
    return features


def test_wrapper_maps_parameters_and_writes_the_pointer(tmp_path, monkeypatch):
    monkeypatch.delenv(REQUIRE_GPU_ENV, raising=False)  # a kfp.local run on a machine without a GPU
    shard = jpeg_shard(str(tmp_path / "w-000000.tar"), 3)
    features = extract(tmp_path, shard)
    pointer = json.loads(open(features.path).read())
    assert pointer == {"features": str(tmp_path / "run" / "features" / "w-000000"), "shard": shard, "images": 3,
                       "skipped": 0, "layers": [0, 3], "model": "tiny-random-coca"}
    assert features.metadata["images"] == 3
    manifest = read_manifest(pointer["features"])
    assert manifest.dtype == "float16"  # fp16 given, stored in the one vocabulary
    assert manifest.made_by["parameters"]["batch_size"] == 2 and manifest.made_by["parameters"]["device"] == "cpu"


def test_a_bad_shard_gives_a_failed_pointer_or_fails_when_asked(tmp_path, monkeypatch):
    monkeypatch.delenv(REQUIRE_GPU_ENV, raising=False)
    bad = str(tmp_path / "bad-000000.tar")
    (tmp_path / "bad-000000.tar").write_bytes(b"not a tar")
    features = extract(tmp_path, bad)
    pointer = json.loads(open(features.path).read())
    assert pointer == {"failed": f"{bad} is not a tar archive (truncated header); webdataset shards are .tar files",
                       "shard": bad, "step": "extract"}
    assert FailedShard.from_pointer(pointer) == FailedShard(bad, pointer["failed"], "extract")
    with pytest.raises(ShardError, match="bad-000000.tar is not a tar archive"):
        extract(tmp_path, bad, fail_on_bad_shard=True)


def test_a_failure_of_the_moment_fails_the_step_for_kfps_retry(tmp_path, monkeypatch):
    """An S3 endpoint that does not answer is no fault of the shard: the step fails, so Kubeflow retries it."""
    monkeypatch.delenv(REQUIRE_GPU_ENV, raising=False)
    with socket.socket() as closed:  # a loopback port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    storage._client_for.cache_clear()
    try:
        with pytest.raises(StorageError, match="S3 endpoint unreachable"):
            extract(tmp_path, "s3://shards/x-000000.tar")
    finally:
        storage._client_for.cache_clear()


def test_wrapper_fails_on_a_missing_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv(REQUIRE_GPU_ENV, "1")  # what the pipeline sets on GPU steps
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(GpuNotVisibleError, match="CUDA_VISIBLE_DEVICES"):
        extract(tmp_path, jpeg_shard(str(tmp_path / "g-000000.tar"), 1))
