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
PARAMETER_PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")
PIPELINE_CHANNEL = "pipelinechannel--"


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


def pod_spec_parameter_faults(pipeline_spec, platform_spec) -> list[str]:
    """Pod-spec fields fed by a run-time parameter that is not a STRING.

    KFP's driver fills the pod-spec fields it resolves at run time (container image, CPU,
    memory and accelerator type/count; PVC and secret names) with GetStringValue(): a number
    parameter becomes "" and the field is silently left out, e.g. a GPU step with no GPU
    limit (KFP 2.17, backend/src/v2/driver/resolve.go). The *Json fields (node selector,
    tolerations) are unmarshalled from the value itself, so structs and lists are fine there.
    Each parameter is traced from the task that runs the executor to where its value comes
    from: the enclosing DAG's input (or the pipeline's, for a loop's pipelinechannel--) or
    another task's output.
    """
    components = pipeline_spec["components"]
    root_inputs = pipeline_spec["root"].get("inputDefinitions", {}).get("parameters", {})
    platform = (platform_spec or {}).get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
    platform_executors = platform.get("executors", {})

    def source_type(dag_inputs: dict, dag: dict, source: dict):
        if "componentInputParameter" in source:
            name = source["componentInputParameter"]
            if name in dag_inputs:
                return dag_inputs[name]["parameterType"]
            if name.startswith(PIPELINE_CHANNEL) and name[len(PIPELINE_CHANNEL):] in root_inputs:
                return root_inputs[name[len(PIPELINE_CHANNEL):]]["parameterType"]
            if name in root_inputs:
                return root_inputs[name]["parameterType"]
            return f"undeclared ({name})"
        if "taskOutputParameter" in source:
            ref = source["taskOutputParameter"]
            producer = components[dag["tasks"][ref["producerTask"]]["componentRef"]["name"]]
            return producer["outputDefinitions"]["parameters"][ref["outputParameterKey"]]["parameterType"]
        return "STRING" if isinstance(source.get("runtimeValue", {}).get("constant"), str) else "constant"

    def pod_spec_parameters(executor: str):
        """(field, parameter name, whether a JSON field) of every parameter feeding the pod spec."""
        container = pipeline_spec["deploymentSpec"]["executors"][executor].get("container", {})
        for field in ("image", "resources"):
            for parameter in PARAMETER_PLACEHOLDER.findall(str(container.get(field, ""))):
                yield f"container.{field}", parameter, False

        def walk(node, path):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "componentInputParameter":
                        yield ".".join(path), value, any(p.endswith("Json") for p in path)
                    else:
                        yield from walk(value, path + [key])
            elif isinstance(node, list):
                for item in node:
                    yield from walk(item, path)

        yield from walk(platform_executors.get(executor, {}), [])

    faults = []

    def check_dag(dag: dict, dag_inputs: dict):
        for task_name, task in dag.get("tasks", {}).items():
            component = components[task["componentRef"]["name"]]
            if "dag" in component:
                check_dag(component["dag"], component.get("inputDefinitions", {}).get("parameters", {}))
                continue
            task_inputs = task.get("inputs", {}).get("parameters", {})
            for field, parameter, is_json in pod_spec_parameters(component["executorLabel"]):
                source = task_inputs.get(parameter, {"componentInputParameter": parameter})
                declared = source_type(dag_inputs, dag, source)
                allowed = ("STRING", "STRUCT", "LIST") if is_json else ("STRING",)
                if declared not in allowed:
                    faults.append(f"{task_name}: {field} takes {parameter!r}, a {declared} parameter")

    check_dag(pipeline_spec["root"]["dag"], root_inputs)
    return faults


def test_lint_pod_spec_fields_take_only_string_parameters(docs):
    assert pod_spec_parameter_faults(*docs) == []
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
        return pod_spec_parameter_faults(docs[0], docs[1] if len(docs) > 1 else None)

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


def undeclared_task_inputs(pipeline_spec) -> list[str]:
    """Task inputs that name a DAG input the enclosing DAG does not declare (nothing feeds them)."""
    out = []

    def walk(dag: dict, declared: dict, where: str):
        for name, task in dag.get("tasks", {}).items():
            for key, source in task.get("inputs", {}).get("parameters", {}).items():
                parent = source.get("componentInputParameter")
                if parent is not None and parent not in declared:
                    out.append(f"{where}/{name}: {key} <- {parent}")
            component = pipeline_spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                walk(component["dag"], component.get("inputDefinitions", {}).get("parameters", {}), f"{where}/{name}")

    walk(pipeline_spec["root"]["dag"], pipeline_spec["root"].get("inputDefinitions", {}).get("parameters", {}), "root")
    return out


@pytest.mark.xfail(strict=True, reason="kfp 2.17's compiler does not pass a pod-spec parameter used only in "
                   "set_accelerator_type() into a ParallelFor's DAG: extract/caption name "
                   "pipelinechannel--gpu_accelerator_type, which the loop does not declare. Not yet run on a "
                   "real KFP backend: whether its driver resolves it (or fails the task) is open (issue 10 note).")
def test_every_task_input_is_fed_by_its_dag(docs):
    pipeline_spec, _ = docs
    assert undeclared_task_inputs(pipeline_spec) == []


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
