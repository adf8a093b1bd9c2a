"""Docker for the image tests: the CLI, the engine's environment for docker/build.sh, building
the image and reading its layers and size, and recording the build figures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAND_IN_BASE = "lverb-stand-in-base:torch2.14.1"
IMAGE_REGISTRY = "lverb.local"
IMAGE_TAG = "image-test"
IMAGE = f"{IMAGE_REGISTRY}/latent-verbalizer:{IMAGE_TAG}"


def docker_cmd() -> str:
    found = shutil.which("docker")
    if found is None:
        pytest.skip("docker CLI missing: apt-get install -y docker.io")
    return found


def docker_answers() -> bool:
    return subprocess.run([docker_cmd(), "info"], capture_output=True, timeout=60).returncode == 0


def build_env() -> dict:
    """The environment docker/build.sh runs with here: the stand-in base, host networking for
    pip, and the classic builder where the CLI has no buildx (BuildKit would need it)."""
    env = dict(os.environ, BASE_IMAGE=STAND_IN_BASE, BUILD_NETWORK="host")
    has_buildx = subprocess.run([docker_cmd(), "buildx", "version"], capture_output=True).returncode == 0
    env["DOCKER_BUILDKIT"] = "1" if has_buildx else "0"
    return env


def build_image(context: Path, tag: str) -> float:
    """docker/build.sh from ``context`` (a repository checkout); returns the seconds it took."""
    t0 = time.monotonic()
    out = subprocess.run([str(context / "docker" / "build.sh"), IMAGE_REGISTRY, tag], env=build_env(),
                         capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, f"docker/build.sh failed:\n{out.stdout[-4000:]}\n{out.stderr[-8000:]}"
    return time.monotonic() - t0


def image_layers(image: str) -> list[str]:
    out = subprocess.run([docker_cmd(), "image", "inspect", "-f", "{{json .RootFS.Layers}}", image],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def image_size(image: str) -> int:
    out = subprocess.run([docker_cmd(), "image", "inspect", "-f", "{{.Size}}", image],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


def record_figures(figures: dict) -> None:
    """Build figures (docker/README.md quotes them) into $LVERB_IMAGE_FIGURES, when set, and the log."""
    path = os.environ.get("LVERB_IMAGE_FIGURES")
    if path:
        old = json.loads(Path(path).read_text()) if Path(path).exists() else {}
        Path(path).write_text(json.dumps({**old, **figures}, indent=2) + "\n")
    print("image figures:", json.dumps(figures))
