"""``make test`` runs the suite on pytest-xdist workers: each worker's torch takes its share of the cores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("xdist", reason="pytest-xdist comes with the test extra (make setup)")


def test_each_worker_uses_its_share_of_the_cores(tmp_path):
    share = max(1, (os.cpu_count() or 1) // 2)
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import os\n\n\n"
        "def test_threads():\n"
        "    import torch\n\n"
        f"    assert os.environ['OMP_NUM_THREADS'] == '{share}'\n"
        f"    assert torch.get_num_threads() == {share}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    # The repository's conftest.py as a plugin: the probe lives outside the repository.
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                             "-n", "2", "--rootdir", str(tmp_path), str(probe)],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
