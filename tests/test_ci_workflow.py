"""The example GitHub workflow's test job, run as shipped where it matters: its steps bring
what the tests need, and its pytest command passes under CI=true in a clean copy of the
committed tree that, like the public repository, has no ../shared/reference beside it.

Running the whole job here would take the suite twice over; the copy runs the job's own
``npm ci`` step and its own pytest command line, collecting everything and running the tests
that need npm's Biome or the reference data.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "kubeflow-pipeline.yaml"
NPM_TEST = "components/report/tests/test_page_assets.py"
REFERENCE_TESTS = ("components/report/tests/test_report_reference.py",
                   "components/caption/tests/test_caption.py::test_reference_captions_round_trip_through_parquet")


def workflow_test_job():
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["test"]


def step_running(job, text: str) -> str:
    (found,) = [s["run"] for s in job["steps"] if text in s.get("run", "")]
    return found


def pytest_command(job) -> list[str]:
    """The job's pytest command line, with this interpreter as its ``python``."""
    (line,) = [ln for ln in step_running(job, "pytest").splitlines() if "-m pytest" in ln]
    argv = shlex.split(line)
    assert argv[0] == "python", line
    return [sys.executable, *argv[1:]]


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory) -> Path:
    """The committed tree (``git archive HEAD``), in a folder with no ../shared/reference."""
    dest = tmp_path_factory.mktemp("public") / "latent-verbalizer"
    dest.mkdir()
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    assert not (dest.parent.parent / "shared" / "reference").exists()
    # the job's `pip install -e .` maps latent_verbalizer.{components,pipeline} to these folders;
    # here the committed links in latent_verbalizer/ do, with PYTHONPATH (this machine's venv maps another checkout)
    assert (dest / "latent_verbalizer" / "components" / "common").is_dir()
    return dest


def run_in(copy: Path, argv: list[str], **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ.update(PYTHONPATH=str(copy), CI="true", **env)
    return subprocess.run(argv, cwd=copy, env=environ, capture_output=True, text=True, timeout=900)


def test_the_job_brings_what_the_tests_need():
    job = workflow_test_job()
    assert job["env"]["CI"] == "true"
    uses = [s.get("uses", "") for s in job["steps"]]
    assert any(u.startswith("actions/setup-node@") for u in uses) and "npm ci" in step_running(job, "npm ci")
    assert "chromium" in step_running(job, "apt-get install")
    assert "offline_models fetch" in step_running(job, "offline_models fetch")
    command = " ".join(pytest_command(job))
    assert "not reference_data" in command and "not gpu" in command and "not image" in command


def test_the_jobs_steps_pass_in_a_clean_copy(clean_copy):
    job = workflow_test_job()
    # the job's own npm step; this machine reaches no registry, npm's cache holds the locked packages
    npm = run_in(clean_copy, ["bash", "-euo", "pipefail", "-c", step_running(job, "npm ci")], npm_config_offline="true")
    assert npm.returncode == 0, npm.stderr
    command = pytest_command(job) + ["-p", "no:cacheprovider"]
    where = run_in(clean_copy, [sys.executable, "-c", "import latent_verbalizer.pipeline.commands as c; print(c.__file__)"])
    assert where.stdout.startswith(str(clean_copy)), where.stdout + where.stderr

    collected = run_in(clean_copy, command + ["--collect-only"])  # with the job's -q: one node id a line
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    ids = collected.stdout
    assert "test_page_assets.py::" in ids and "test_submit.py::" in ids
    assert "test_report_reference.py::" not in ids and "test_smollm2_end_to_end" not in ids
    assert "test_reference_captions_round_trip_through_parquet" not in ids

    ran = run_in(clean_copy, command + [NPM_TEST, *REFERENCE_TESTS])
    tail = ran.stdout[-4000:] + ran.stderr[-2000:]
    assert ran.returncode == 0, tail
    assert " passed" in tail and "skipped" not in tail and "failed" not in tail and " deselected" in tail
