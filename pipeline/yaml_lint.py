"""Rules of KFP's backend that the compiled YAML must keep, checked offline.

kfp.local runs the pipeline in one process on one disk: it neither resolves inputs the way
KFP's Go driver does, nor builds pods. Each rule here is one the driver or Kubernetes applies
on a cluster, where breaking it stops a run (KFP 2.17, ``backend/src/v2/driver/``):

- **driver inputs** (``resolve.go``, ``resolveInputParameter``/``resolveInputArtifact``): a
  task's ``componentInputParameter``/``componentInputArtifact``, and each one in the Kubernetes
  config of its executor, must be an input of the DAG the task sits in ("parent DAG does not
  have input parameter"); a ``{{$.inputs.parameters['X']}}`` in a task's runtime values or its
  executor's resources must name an input of that task; a producer task must be in the same DAG.
- **pod-spec types**: pod-spec fields resolved at run time (image, CPU, memory, accelerator,
  PVC and secret names) are read with GetStringValue(): a number parameter becomes "" and the
  field is silently dropped (a GPU step without a GPU limit). Only the ``*Json`` fields (node
  selector, tolerations) take structs and lists.
- **mounts**: a step that may read a path parameter (``/models/...``) must mount the volume that
  path lives on; kfp.local shares the host's disk and never notices.
- **limits**: every step requests and limits CPU and memory (namespaces with a quota on limits
  reject pods without them).

``lint(pipeline_spec, platform_spec)`` returns every fault as a line; ``lverb compile`` refuses
to write a YAML with faults, and tests/test_compile.py runs each rule on the committed YAML and
on small pipelines that break it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

PARAMETER_PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")
PIPELINE_CHANNEL = "pipelinechannel--"
# Component inputs that may hold a path on a mounted volume (``/models/...``), and the volume
# every step that takes one must mount (pipeline.py mounts it on every step).
PATH_INPUTS = frozenset({"shards", "shard", "storage_prefix", "storage_root", "model", "pretrained", "llm_model",
                         "compare_prefix"})
RESOURCE_FIELDS = ("CpuRequest", "CpuLimit", "MemoryRequest", "MemoryLimit")  # as cpuLimit or resourceCpuLimit


def _tasks(pipeline_spec: dict) -> Iterator[tuple[str, dict, dict, dict]]:
    """(path, task, the DAG it sits in, that DAG's input definitions) of every task, in loops too."""
    components = pipeline_spec["components"]

    def walk(dag: dict, inputs: dict, where: str):
        for name, task in dag.get("tasks", {}).items():
            yield f"{where}/{name}", task, dag, inputs
            component = components[task["componentRef"]["name"]]
            if "dag" in component:
                yield from walk(component["dag"], component.get("inputDefinitions", {}), f"{where}/{name}")

    yield from walk(pipeline_spec["root"]["dag"], pipeline_spec["root"].get("inputDefinitions", {}), "root")


def _executor_of(pipeline_spec: dict, task: dict) -> str | None:
    return pipeline_spec["components"][task["componentRef"]["name"]].get("executorLabel")


def _platform_executors(platform_spec: dict | None) -> dict:
    return (platform_spec or {}).get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})


def _component_inputs_in(node, path=()) -> Iterator[tuple[str, str, str]]:
    """(field path, kind, name) of every componentInputParameter/Artifact in a platform config."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("componentInputParameter", "componentInputArtifact"):
                yield ".".join(path), key, value
            else:
                yield from _component_inputs_in(value, path + (key,))
    elif isinstance(node, list):
        for item in node:
            yield from _component_inputs_in(item, path)


def driver_input_faults(pipeline_spec: dict, platform_spec: dict | None) -> list[str]:
    """Inputs the driver cannot resolve: see the module docstring."""
    faults = []
    platform = _platform_executors(platform_spec)
    executors = pipeline_spec.get("deploymentSpec", {}).get("executors", {})
    for where, task, dag, dag_inputs in _tasks(pipeline_spec):
        declared = {"componentInputParameter": set(dag_inputs.get("parameters", {})),
                    "componentInputArtifact": set(dag_inputs.get("artifacts", {}))}
        inputs = task.get("inputs", {})
        for kind_key, kind in (("parameters", "componentInputParameter"), ("artifacts", "componentInputArtifact")):
            for key, source in inputs.get(kind_key, {}).items():
                if kind in source and source[kind] not in declared[kind]:
                    faults.append(f"{where}: input {key} takes {source[kind]!r}, which its DAG does not declare "
                                  "(the driver fails: parent DAG does not have input parameter)")
                for producer_key in ("taskOutputParameter", "taskOutputArtifact"):
                    producer = source.get(producer_key, {}).get("producerTask")
                    if producer is not None and producer not in dag.get("tasks", {}):
                        faults.append(f"{where}: input {key} comes from task {producer!r}, which is not in its DAG")
        executor = _executor_of(pipeline_spec, task)
        if executor is None:
            continue
        for field, kind, name in _component_inputs_in(platform.get(executor, {})):
            if name not in declared[kind]:
                faults.append(f"{where}: its Kubernetes {field} takes {name!r}, which its DAG does not declare")
        task_parameters = set(inputs.get("parameters", {}))
        runtime_values = [str(s.get("runtimeValue", {}).get("constant", "")) for s in inputs.get("parameters", {}).values()]
        resources = str(executors.get(executor, {}).get("container", {}).get("resources", ""))
        for text, what in [(v, "a runtime value") for v in runtime_values] + [(resources, "its resources")]:
            for name in PARAMETER_PLACEHOLDER.findall(text):
                if name not in task_parameters:
                    faults.append(f"{where}: {what} names input {name!r}, which the task does not take")
    return faults


def pod_spec_type_faults(pipeline_spec: dict, platform_spec: dict | None) -> list[str]:
    """Pod-spec fields fed by a run-time parameter that is not a STRING (see the module docstring).

    Each parameter is traced from the task that runs the executor to where its value comes
    from: the enclosing DAG's input (or the pipeline's, for a loop's pipelinechannel--) or
    another task's output.
    """
    components = pipeline_spec["components"]
    root_inputs = pipeline_spec["root"].get("inputDefinitions", {}).get("parameters", {})
    platform = _platform_executors(platform_spec)

    def source_type(dag_inputs: dict, dag: dict, source: dict) -> str:
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
        container = pipeline_spec["deploymentSpec"]["executors"][executor].get("container", {})
        for field in ("image", "resources"):
            for parameter in PARAMETER_PLACEHOLDER.findall(str(container.get(field, ""))):
                yield f"container.{field}", parameter, False
        for field, kind, name in _component_inputs_in(platform.get(executor, {})):
            if kind == "componentInputParameter":
                yield field, name, any(p.endswith("Json") for p in field.split("."))

    faults = []
    for where, task, dag, dag_inputs in _tasks(pipeline_spec):
        executor = _executor_of(pipeline_spec, task)
        if executor is None:
            continue
        task_inputs = task.get("inputs", {}).get("parameters", {})
        for field, parameter, is_json in pod_spec_parameters(executor):
            source = task_inputs.get(parameter, {"componentInputParameter": parameter})
            declared = source_type(dag_inputs.get("parameters", {}), dag, source)
            allowed = ("STRING", "STRUCT", "LIST") if is_json else ("STRING",)
            if declared not in allowed:
                faults.append(f"{where}: {field} takes {parameter!r}, a {declared} parameter")
    return faults


def mount_faults(pipeline_spec: dict, platform_spec: dict | None, mount_path: str) -> list[str]:
    """Steps that take a path parameter (PATH_INPUTS) but do not mount ``mount_path``."""
    platform = _platform_executors(platform_spec)
    faults = []
    for where, task, _, _ in _tasks(pipeline_spec):
        executor = _executor_of(pipeline_spec, task)
        if executor is None:
            continue
        paths = sorted(PATH_INPUTS & set(task.get("inputs", {}).get("parameters", {})))
        mounts = {m.get("mountPath") for m in platform.get(executor, {}).get("pvcMount", [])}
        if paths and mount_path not in mounts:
            faults.append(f"{where}: takes {', '.join(paths)} (may be a {mount_path}/... path) but does not mount {mount_path}")
    return faults


def resource_faults(pipeline_spec: dict) -> list[str]:
    """Executors without CPU and memory requests and limits."""
    faults = []
    for name, executor in pipeline_spec.get("deploymentSpec", {}).get("executors", {}).items():
        resources = executor.get("container", {}).get("resources", {})
        missing = [f[0].lower() + f[1:] for f in RESOURCE_FIELDS
                   if f[0].lower() + f[1:] not in resources and "resource" + f not in resources]
        if missing:
            faults.append(f"{name}: no {', '.join(missing)} (a namespace with a quota on limits rejects the pod)")
    return faults


def lint(pipeline_spec: dict, platform_spec: dict | None, mount_path: str | None = None) -> list[str]:
    """Every rule's faults; ``mount_path``: the volume every step taking a path parameter mounts."""
    faults = driver_input_faults(pipeline_spec, platform_spec) + pod_spec_type_faults(pipeline_spec, platform_spec)
    if mount_path:
        faults += mount_faults(pipeline_spec, platform_spec, mount_path) + resource_faults(pipeline_spec)
    return faults
