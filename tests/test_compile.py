"""The compiled pipeline: reproducible from source, valid offline, and holding the settings
a cluster needs (GPU limits, tolerations, /dev/shm, secrets as env, retries)."""

import re

import pytest
import yaml
from google.protobuf import json_format

from latent_verbalizer.pipeline.compile import COMPILED, compile_pipeline

GPU_EXECUTORS = ("exec-extract-shard", "exec-caption-shard", "exec-categorize-captions")
GPU_TASKS = ("extract", "caption", "categorize")
SECRETISH = re.compile(r"(secret|token|password|access_key)", re.I)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    path = tmp_path_factory.mktemp("compiled") / "latent_verbalizer.yaml"
    compile_pipeline(str(path))
    return path


@pytest.fixture(scope="module")
def docs(fresh):
    pipeline_spec, platform_spec = yaml.safe_load_all(fresh.read_text())
    return pipeline_spec, platform_spec


def all_tasks(pipeline_spec):
    """(task name as displayed, task spec) of every task, inside loops too."""
    out = []

    def walk(dag):
        for name, task in dag.get("tasks", {}).items():
            out.append((task.get("taskInfo", {}).get("name", name), task))
            comp = pipeline_spec["components"].get(task["componentRef"]["name"], {})
            if "dag" in comp:
                walk(comp["dag"])

    walk(pipeline_spec["root"]["dag"])
    return dict(out)


def test_committed_yaml_is_not_stale(fresh):
    assert open(COMPILED).read() == fresh.read_text(), (
        "latent_verbalizer.yaml is stale: run `make pipeline` (lverb compile) and commit it")


def test_strict_protobuf_parse_of_both_documents(docs):
    from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    pipeline_spec, platform_spec = docs
    json_format.ParseDict(pipeline_spec, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    json_format.ParseDict(platform_spec, pipeline_spec_pb2.PlatformSpec(), ignore_unknown_fields=False)
    executors = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, config in executors.items():
        json_format.ParseDict(config, k8s_pb2.KubernetesExecutorConfig(), ignore_unknown_fields=False)


def test_reloads_as_a_component(fresh):
    from kfp import components

    loaded = components.load_component_from_file(str(fresh))
    assert loaded.name == "latent-verbalizer"
    assert {"shards", "storage_prefix", "extract_model", "categorize_model", "categorize_gpus"} <= set(loaded.component_spec.inputs)


def test_gpu_tasks_have_limits_tolerations_shm_secrets_and_retries(docs):
    pipeline_spec, platform_spec = docs
    executors = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in GPU_EXECUTORS:
        config = executors[name]
        assert config["tolerations"], name
        assert any(m["mountPath"] == "/dev/shm" and m["medium"] == "Memory" for m in config["emptyDirMounts"]), name
        secrets = {s["secretName"]: s for s in config["secretAsEnv"]}
        assert {e["envVar"] for e in secrets["lverb-s3-credentials"]["keyToEnv"]} >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert {e["envVar"] for e in secrets["lverb-hf-token"]["keyToEnv"]} == {"HF_TOKEN"}
        assert config["pvcMount"][0]["mountPath"] == "/models"
        resources = pipeline_spec["deploymentSpec"]["executors"][name]["container"]["resources"]
        assert "accelerator" in resources, name
    tasks = all_tasks(pipeline_spec)
    for name in GPU_TASKS:
        assert tasks[name]["retryPolicy"]["maxRetryCount"] >= 1
    assert "lverb-hf-token" not in str(executors["exec-list-shards"]), "CPU preflight needs no HF token"
    assert "accelerator" not in pipeline_spec["deploymentSpec"]["executors"]["exec-list-shards"]["container"].get("resources", {})


def test_lint_no_secret_defaults_and_pinned_images(docs):
    pipeline_spec, _ = docs
    for name, spec in pipeline_spec["root"]["inputDefinitions"]["parameters"].items():
        assert not SECRETISH.search(name), f"parameter {name} looks like a secret: secrets come from Kubernetes secrets"
        default = str(spec.get("defaultValue", ""))
        assert not re.search(r"(AKIA|hf_[A-Za-z0-9]{10})", default), name
        assert spec.get("description"), f"parameter {name} has no help text"
    for name, executor in pipeline_spec["deploymentSpec"]["executors"].items():
        image = executor["container"]["image"]
        tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", f"{name}: image {image} is not pinned to a tag"


def test_registry_and_tag_options(tmp_path):
    path = compile_pipeline(str(tmp_path / "p.yaml"), registry="reg.example.com/ml", tag="1.2.3")
    spec = next(yaml.safe_load_all(open(path)))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"reg.example.com/ml/latent-verbalizer:1.2.3"}
    with pytest.raises(ValueError, match="pin the image"):
        compile_pipeline(str(tmp_path / "q.yaml"), tag="latest")
