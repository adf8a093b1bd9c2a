"""The built image, for the image tests (``make image-test``; marker ``image``, not in ``make test``).

Session fixtures: a Docker engine (``dockerd`` started here when none answers, and stopped
again), the stand-in base (``docker/stand-in-base.sh``: no image can be pulled here), and
the image ``docker/build.sh`` builds from it, with the build times recorded.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.image.docker_images import (
    IMAGE,
    IMAGE_TAG,
    ROOT,
    STAND_IN_BASE,
    build_image,
    docker_answers,
    image_size,
    record_figures,
)


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory):
    """A running Docker engine; one started here is stopped at the end of the session."""
    if docker_answers():
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        pytest.skip("dockerd missing: apt-get install -y docker.io")
    state = tmp_path_factory.mktemp("dockerd")
    log = open(state / "dockerd.log", "wb")
    proc = subprocess.Popen([dockerd, "--pidfile", str(state / "dockerd.pid")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not docker_answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start: see {state / 'dockerd.log'}")
            time.sleep(1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def stand_in_base(docker_engine):
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap missing: apt-get install -y mmdebstrap")
    t0 = time.monotonic()
    out = subprocess.run([str(ROOT / "docker" / "stand-in-base.sh"), STAND_IN_BASE], capture_output=True, text=True,
                         timeout=3600)
    assert out.returncode == 0, f"docker/stand-in-base.sh failed:\n{out.stderr[-8000:]}"
    return {"image": STAND_IN_BASE, "seconds": time.monotonic() - t0, "bytes": image_size(STAND_IN_BASE)}


@pytest.fixture(scope="session")
def lverb_image(stand_in_base):
    """The pipeline image, built by docker/build.sh on the stand-in base; figures recorded."""
    seconds = build_image(ROOT, IMAGE_TAG)
    figures = {"stand_in_base_seconds": round(stand_in_base["seconds"], 1),
               "stand_in_base_bytes": stand_in_base["bytes"],
               "build_seconds": round(seconds, 1), "image_bytes": image_size(IMAGE)}
    record_figures(figures)
    return IMAGE
