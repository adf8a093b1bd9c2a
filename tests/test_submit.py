"""``lverb submit`` through the real kfp SDK client against a local KFP v2beta1 REST server."""

import json

import pytest

from latent_verbalizer.pipeline.cli import main as lverb
from tests.kfp_api_server import KfpApiServer

TOKEN = "t0ken-that-must-not-leak"


@pytest.fixture
def package(tmp_path):
    from latent_verbalizer.pipeline.compile import compile_pipeline

    return compile_pipeline(str(tmp_path / "p.yaml"))


def test_upload_once_version_per_commit_run_with_params(package, monkeypatch, capsys):
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    with KfpApiServer() as server:
        args = ["submit", "--host", server.url, "--package", package, "--experiment", "exp-a",
                "--params", "shards=s3://d/x-{000..001}.tar,categorize_gpus=4"]
        assert lverb(args + ["--version", "0.1.0-abc123"]) == 0
        assert lverb(args + ["--version", "0.1.0-abc123"]) == 0   # same commit: no new version
        assert lverb(args + ["--version", "0.1.0-def456", "--wait"]) == 0
        out = capsys.readouterr().out
        state = server.state
        (pipeline,) = state.pipelines.values()
        assert pipeline["display_name"] == "latent-verbalizer"
        assert sorted(set(pipeline["versions"].values())) == ["0.1.0-abc123", "0.1.0-def456", "latent-verbalizer"]
        uploads = [r for r in state.requests if r.path.endswith("/upload")]
        assert len(uploads) == 1, "the pipeline is uploaded once, then versions"
        assert b"pipelineInfo" in uploads[0].body and b"latent-verbalizer" in uploads[0].body
        assert len([r for r in state.requests if r.path.endswith("/upload_version")]) == 2
        assert list(state.experiments.values()) == ["exp-a"]
        runs = list(state.runs.values())
        assert len(runs) == 3
        params = runs[-1]["runtime_config"]["parameters"]
        # categorize_gpus is a STRING parameter (KFP's driver drops a GPU limit given as a number)
        assert params == {"shards": "s3://d/x-{000..001}.tar", "categorize_gpus": "4"}
        assert runs[-1]["pipeline_version_reference"]["pipeline_version_id"] in pipeline["versions"]
        assert "state: SUCCEEDED" in out and "/#/runs/details/" in out
        for r in state.requests:
            assert r.headers.get("authorization") == f"Bearer {TOKEN}", r.path
            assert TOKEN.encode() not in r.body, "the token travels only in the header"


def test_failed_run_exits_non_zero(package, monkeypatch):
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    with KfpApiServer() as server:
        server.state.final_state = "FAILED"
        assert lverb(["submit", "--host", server.url, "--package", package, "--version", "v1", "--wait"]) == 1


def test_secrets_are_refused_as_parameters(package, monkeypatch, capsys):
    with KfpApiServer() as server:
        assert lverb(["submit", "--host", server.url, "--package", package,
                      "--params", json.dumps({"aws_secret_access_key": "x"})]) == 2
        assert "secrets never go in pipeline parameters" in capsys.readouterr().err
        assert not server.state.runs
