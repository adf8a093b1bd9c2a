"""The KFP wrapper of the preflight step, called as a plain function (``python_func``), as
kubeflow/pipelines-components tests its components: parameters in, the shard list out."""

import os

import pytest

from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.storage.run_prefix import run_storage_prefix
from latent_verbalizer.components.preflight.component import make_list_shards_op
from tests.images import jpeg_shard

list_shards = make_list_shards_op("example.com/latent-verbalizer:test")


def page():
    """The run-size Markdown artifact, in a folder of its own."""
    import tempfile

    from kfp import dsl

    return dsl.Markdown(uri=os.path.join(tempfile.mkdtemp(), "run_size.md"))


@pytest.fixture
def two_shards(s3_bucket, tmp_path):
    for i in range(2):
        path = jpeg_shard(str(tmp_path / f"p-{i:06d}.tar"), 1)
        storage.write_bytes(f"{s3_bucket}/in/p-{i:06d}.tar", open(path, "rb").read())
    return s3_bucket + "/in/p-{000000..000001}.tar"


def test_wrapper_lists_the_shards(two_shards, s3_bucket, capsys):
    uris = list_shards.python_func(run_size=page(), shards=two_shards, storage_prefix=s3_bucket + "/run", model="tiny-random-coca",
                                   layers="0,2", llm_model="smollm2-135m", llm_gpus="2")
    assert uris == [f"{s3_bucket}/in/p-00000{i}.tar" for i in range(2)]
    assert "2 shards:" in capsys.readouterr().out


def test_each_run_gets_its_own_prefix_by_default(two_shards, s3_bucket, capsys):
    list_shards.python_func(run_size=page(), shards=two_shards, storage_prefix="", storage_root=s3_bucket + "/runs", run_id="3f2a-run-a",
                            model="tiny-random-coca", layers="all", llm_model="smollm2-135m", llm_gpus="1")
    assert f"bulk data of this run under {s3_bucket}/runs/3f2a-run-a" in capsys.readouterr().out
    assert run_storage_prefix("", "s3://b/runs", "9c1d-run-b") == "s3://b/runs/9c1d-run-b"


def test_a_named_prefix_is_shared_as_given():
    """Runs that name the same storage_prefix reuse each other's finished work."""
    assert run_storage_prefix("s3://b/shared", "s3://b/runs", "run-a") == "s3://b/shared"


@pytest.mark.parametrize("root,run_id,message", [("", "run-1", "storage_root and storage_prefix are both empty"),
                                                 ("s3://b/runs", "{{$.pipeline_job_uuid}}", "no run id")])
def test_a_run_without_a_prefix_is_refused(two_shards, root, run_id, message):
    with pytest.raises(ValueError, match=message):
        list_shards.python_func(run_size=page(), shards=two_shards, storage_prefix="", storage_root=root, run_id=run_id,
                                model="tiny-random-coca", layers="all", llm_model="smollm2-135m", llm_gpus="1")


def test_wrapper_takes_the_gpu_count_as_a_string():
    """KFP's driver puts only STRING parameters into a pod's GPU limit: the wrapper's type says so."""
    inputs = list_shards.component_spec.inputs
    assert inputs["llm_gpus"].type == "String"


@pytest.mark.parametrize("gpus", ["eight", "-1", "0"])
def test_wrapper_refuses_a_gpu_count_that_is_not_one(two_shards, s3_bucket, gpus):
    with pytest.raises(ValueError, match=f"categorize_gpus='{gpus}' is not a GPU count"):
        list_shards.python_func(run_size=page(), shards=two_shards, storage_prefix=s3_bucket + "/run", model="tiny-random-coca",
                                layers="all", llm_model="smollm2-135m", llm_gpus=gpus)
    assert storage.list_uris(s3_bucket + "/run") == [], "nothing is written before the parameters are checked"
