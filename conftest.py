"""Fixtures every test folder shares: a real S3 server on loopback, an S3 bucket per test."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.s3server import start_seaweedfs


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs one worker per core), each worker's torch and the
    steps it starts (kfp.local subprocesses inherit the environment) use its share of the cores,
    not all of them each: set before torch is first imported, unless the caller chose a number."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        share = str(max(1, (os.cpu_count() or 1) // int(workers)))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, share)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = start_seaweedfs(str(tmp_path_factory.mktemp("seaweedfs")))
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """S3 credentials and endpoint in the environment, as a Kubernetes secret would give them."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    from latent_verbalizer.components.common import storage

    storage._client_for.cache_clear()
    yield s3_server
    storage._client_for.cache_clear()


@pytest.fixture
def own_s3_server(tmp_path, monkeypatch):
    """A SeaweedFS server of one test alone, in the environment: for tests that stop or
    restart the object store (the session's server must stay up)."""
    from latent_verbalizer.components.common import storage

    (tmp_path / "weed").mkdir()
    server = start_seaweedfs(str(tmp_path / "weed"))
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    storage._client_for.cache_clear()
    yield server
    server.stop()
    storage._client_for.cache_clear()


@pytest.fixture
def s3_bucket(s3_env):
    """A fresh bucket; returns its ``s3://`` URI."""
    from latent_verbalizer.components.common import storage

    uri = f"s3://t-{uuid.uuid4().hex[:12]}"
    storage.ensure_bucket(uri + "/x")
    yield uri
    # SeaweedFS gives each bucket a collection with volumes of its own; a session's server runs out
    # of free volumes after some dozens of buckets ("No writable volumes and no free volumes left")
    # unless they are deleted again.
    s3_env.delete_bucket(storage.parse_s3(uri).bucket)


@pytest.hookimpl(tryfirst=True)  # before -m deselects: ``-m "not reference_data"`` must see the marker
def pytest_collection_modifyitems(config, items):
    """Tests that read the original study's outputs (through a ``reference_dir`` fixture) are
    marked ``reference_data``: a checkout without ../shared/reference (the public repository,
    its GitHub workflow) deselects them instead of failing their skip under CI=true."""
    for item in items:
        if "reference_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.reference_data)
    # The whole-pipeline modules (tests/test_pipeline_*.py, minutes each) first: on pytest-xdist
    # workers they then run beside the short tests instead of after them, at the end, alone.
    items.sort(key=lambda item: 0 if item.path.name.startswith("test_pipeline_") else 1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (``CI=true``) every tool, model file and data set a test needs is installed, so
    a skip means something is missing: it fails there instead of passing silently."""
    import os

    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where everything tests need is set up: {report.longrepr}"
