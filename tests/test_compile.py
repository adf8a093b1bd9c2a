"""The compiled pipeline: reproducible from source, valid offline, and holding the settings
a cluster needs (GPU limits, tolerations, /dev/shm, secrets as env, retries)."""

import re

import pytest
import yaml
from google.protobuf import json_format

from latent_verbalizer.pipeline.compile import COMPILED, compile_pipeline, lint_compiled
from latent_verbalizer.pipeline.yaml_lint import (
    driver_input_faults,
    mount_faults,
    pod_spec_type_faults,
    resource_faults,
)

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


def test_lint_pod_spec_fields_take_only_string_parameters(docs):
    assert pod_spec_type_faults(*docs) == []
    pipeline_spec, _ = docs
    categorize = pipeline_spec["deploymentSpec"]["executors"]["exec-categorize-captions"]["container"]
    assert "categorize_gpus" in categorize["resources"]["accelerator"]["resourceCount"], "the GPU count is the user's"


def test_lint_finds_a_gpu_limit_fed_by_an_int_parameter(tmp_path):
    """What the pipeline compiled to before: an int parameter as a GPU count, which KFP's driver drops."""
    from kfp import compiler, dsl, kubernetes

    @dsl.component(base_image="python:3.11-slim")
    def step(n: int):
        print(n)

    @dsl.pipeline(name="int-fed-limit")
    def int_fed(gpus: int = 8, accelerator: str = "nvidia.com/gpu", pvc: int = 3):
        task = step(n=gpus)
        task.set_accelerator_type(accelerator).set_accelerator_limit(gpus)
        kubernetes.mount_pvc(task, pvc_name=pvc, mount_path="/models")

    @dsl.pipeline(name="string-fed-limit")
    def string_fed(gpus: str = "8", accelerator: str = "nvidia.com/gpu"):
        task = step(n=1)
        task.set_accelerator_type(accelerator).set_accelerator_limit(gpus)

    for func in (int_fed, string_fed):
        compiler.Compiler().compile(func, str(tmp_path / f"{func.name}.yaml"))
    def lint(name):
        docs = list(yaml.safe_load_all((tmp_path / f"{name}.yaml").read_text()))
        return pod_spec_type_faults(docs[0], docs[1] if len(docs) > 1 else None)

    faults = lint("int-fed-limit")
    assert any("container.resources takes 'pipelinechannel--gpus', a NUMBER_INTEGER parameter" in f for f in faults), faults
    assert not any("accelerator" in f for f in faults), "the string accelerator type is fine"
    assert any("pvcMount" in f and "NUMBER_INTEGER" in f for f in faults), faults
    assert lint("string-fed-limit") == []


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
    # preflight reads hf:ORG/NAME models' configs from the hub (gated ones need the token)
    assert "lverb-hf-token" in str(executors["exec-list-shards"]), "preflight checks Hugging Face models on the hub"
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


def test_the_committed_yaml_keeps_every_rule_of_kfps_backend(fresh):
    """Driver inputs, pod-spec types, the weights volume where paths are read, requests and limits."""
    assert lint_compiled(open(COMPILED).read()) == []
    assert lint_compiled(fresh.read_text()) == []


def compile_docs(func, tmp_path):
    from kfp import compiler

    path = tmp_path / f"{func.name}.yaml"
    compiler.Compiler().compile(func, str(path))
    docs = list(yaml.safe_load_all(path.read_text()))
    return docs[0], docs[1] if len(docs) > 1 else None


def test_driver_lint_finds_a_loop_that_does_not_declare_its_tasks_accelerator(tmp_path):
    """What the pipeline compiled to before: a run parameter used only in set_accelerator_type() inside a
    ParallelFor, which the loop does not declare (KFP 2.17's driver: "parent DAG does not have input
    parameter"); declared through the pipeline's own helper, the same pipeline passes."""
    from kfp import dsl

    from latent_verbalizer.pipeline.pipeline import _declare_in_enclosing_dag

    @dsl.component(base_image="python:3.11-slim")
    def step(item: str):
        print(item)

    def make(declare: bool):
        @dsl.pipeline(name=f"loop-accelerator-{declare}")
        def loop(items: list = ["a", "b"], accelerator: str = "nvidia.com/gpu", memory: str = "8Gi"):
            with dsl.ParallelFor(items) as item:
                task = step(item=item).set_accelerator_type(accelerator).set_accelerator_limit("1")
                task.set_memory_limit(memory)
                if declare:
                    _declare_in_enclosing_dag(task, accelerator, memory)
        return loop

    faults = driver_input_faults(*compile_docs(make(False), tmp_path))
    assert any("pipelinechannel--accelerator" in f and "does not declare" in f for f in faults), faults
    assert any("pipelinechannel--memory" in f for f in faults), faults
    assert driver_input_faults(*compile_docs(make(True), tmp_path)) == []


def test_driver_lint_rules_on_hand_broken_specs(docs):
    """Each of the driver's rules, broken by hand in a copy of the compiled YAML, is found."""
    import copy

    pipeline_spec, platform_spec = copy.deepcopy(docs)
    loop = next(c for name, c in pipeline_spec["components"].items() if name.startswith("comp-for-loop"))
    extract = loop["dag"]["tasks"]["extract-shard"]
    extract["inputs"]["parameters"]["model"] = {"componentInputParameter": "pipelinechannel--no_such_input"}
    caption = loop["dag"]["tasks"]["caption-shard"]
    caption["inputs"]["artifacts"]["features"]["taskOutputArtifact"]["producerTask"] = "no-such-task"
    caption["inputs"]["parameters"]["batch_size"] = {"runtimeValue": {"constant": "{{$.inputs.parameters['nope']}}"}}
    executors = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    executors["exec-extract-shard"]["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"] = "pipelinechannel--gone"
    faults = "\n".join(driver_input_faults(pipeline_spec, platform_spec))
    assert "extract-shard: input model takes 'pipelinechannel--no_such_input'" in faults
    assert "caption-shard: input features comes from task 'no-such-task'" in faults
    assert "caption-shard: a runtime value names input 'nope'" in faults
    assert "extract-shard: its Kubernetes nodeSelector.nodeSelectorJson takes 'pipelinechannel--gone'" in faults


def test_mount_and_limits_lint_find_a_step_without_them(docs):
    import copy

    pipeline_spec, platform_spec = copy.deepcopy(docs)
    executors = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    del executors["exec-list-shards"]["pvcMount"]
    resources = pipeline_spec["deploymentSpec"]["executors"]["exec-build-report-page"]["container"]["resources"]
    del resources["memoryLimit"], resources["resourceMemoryLimit"]
    assert mount_faults(pipeline_spec, platform_spec, "/models") == [
        "root/list-shards: takes compare_prefix, llm_model, model, pretrained, shards, storage_prefix, storage_root "
        "(may be a /models/... path) but does not mount /models"]
    assert resource_faults(pipeline_spec) == [
        "exec-build-report-page: no memoryLimit (a namespace with a quota on limits rejects the pod)"]


def test_every_step_mounts_the_weights_volume_and_knows_it(docs):
    """Paths on the weights volume work in every step; preflight knows what is mounted."""
    pipeline_spec, platform_spec = docs
    executors = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in pipeline_spec["deploymentSpec"]["executors"]:
        assert [m["mountPath"] for m in executors[name]["pvcMount"]] == ["/models"], name
        env = pipeline_spec["deploymentSpec"]["executors"][name]["container"].get("env", [])
        assert {"name": "LVERB_POD_MOUNTS", "value": "/models"} in env, name


def test_memory_is_the_users_and_requested_as_limited(docs):
    pipeline_spec, _ = docs
    params = pipeline_spec["root"]["inputDefinitions"]["parameters"]
    for step in ("extract", "caption", "categorize"):
        assert params[f"{step}_memory"]["parameterType"] == "STRING"
        resources = pipeline_spec["deploymentSpec"]["executors"][f"exec-{step}-{'captions' if step == 'categorize' else 'shard'}"][
            "container"]["resources"]
        placeholder = f"{{{{$.inputs.parameters['pipelinechannel--{step}_memory']}}}}"
        assert resources["resourceMemoryRequest"] == resources["resourceMemoryLimit"] == placeholder, step


def test_compile_refuses_to_write_a_yaml_that_breaks_a_rule(tmp_path, monkeypatch):
    from latent_verbalizer.pipeline import pipeline

    monkeypatch.setattr(pipeline, "_declare_in_enclosing_dag", lambda task, *values: task)
    out = tmp_path / "p.yaml"
    with pytest.raises(ValueError, match="parent DAG does not have input parameter"):
        compile_pipeline(str(out))
    assert not out.exists()


def test_defaults_are_the_study_method_and_runs_do_not_share_storage(docs):
    """fp32 decoding by default (bf16 is opt-in), no cap on answer parts, a storage prefix per run."""
    pipeline_spec, _ = docs
    params = pipeline_spec["root"]["inputDefinitions"]["parameters"]
    assert params["caption_precision"]["defaultValue"] == "float32"
    assert params["categorize_max_answer_parts"]["defaultValue"] == 0
    assert params["storage_prefix"]["defaultValue"] == ""
    for name in ("check parameters, list shards", "extract", "caption", "categorize", "report"):
        run_id = all_tasks(pipeline_spec)[name]["inputs"]["parameters"]["run_id"]["runtimeValue"]["constant"]
        assert run_id == "{{$.pipeline_job_uuid}}", f"{name}: each run gets <storage_root>/<run id>"


def test_kfp_cache_is_off_for_every_step(docs):
    """Reuse comes from the steps' manifests, which check the data exists: KFP's cache key does not."""
    pipeline_spec, _ = docs
    for name, task in all_tasks(pipeline_spec).items():
        if "componentRef" in task and not name.startswith("for-loop"):
            assert task.get("cachingOptions", {}).get("enableCache") is not True, name


def test_labelling_is_a_loop_over_partitions_merged_for_the_report(docs):
    """Issue 20: each partition is a categorize task of its own (its own node, categorize_gpus GPUs) inside a
    ParallelFor over the partition step's list; the merge step's labels are what the report reads."""
    pipeline_spec, platform_spec = docs
    params = pipeline_spec["root"]["inputDefinitions"]["parameters"]
    assert params["categorize_partitions"]["defaultValue"] == 1
    assert "identical captions are labelled once" in params["categorize_partitions"]["description"]
    root = pipeline_spec["root"]["dag"]["tasks"]
    loop_name, loop = next((name, task) for name, task in root.items()
                           if task.get("parameterIterator", {}).get("items", {}).get("inputParameter")
                           == "pipelinechannel--partition-captions-Output")
    loop_dag = pipeline_spec["components"][loop["componentRef"]["name"]]["dag"]
    assert set(loop_dag["tasks"]) == {"categorize-captions"}
    assert "iteratorPolicy" not in loop, "every partition at once (no parallelism limit)"
    categorize = loop_dag["tasks"]["categorize-captions"]
    assert categorize["inputs"]["parameters"]["partition"] == {
        "componentInputParameter": "pipelinechannel--partition-captions-Output-loop-item"}
    assert categorize["inputs"]["artifacts"]["captions"] == {"componentInputArtifact": "pipelinechannel--partition-captions-collected"}
    merge = root["merge-label-partitions"]
    assert merge["inputs"]["artifacts"]["partitions"]["taskOutputArtifact"]["producerTask"] == loop_name
    assert root["build-report-page"]["inputs"]["artifacts"]["labels"]["taskOutputArtifact"] == {
        "outputArtifactKey": "labels", "producerTask": "merge-label-partitions"}
    executors = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for cpu_step in ("exec-partition-captions", "exec-merge-label-partitions"):
        assert "accelerator" not in pipeline_spec["deploymentSpec"]["executors"][cpu_step]["container"]["resources"]
        assert "secretAsEnv" in executors[cpu_step], cpu_step
