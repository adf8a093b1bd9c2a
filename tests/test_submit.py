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


def _compile(path, **kw) -> str:
    from latent_verbalizer.pipeline.compile import compile_pipeline

    return compile_pipeline(str(path), **kw)


def _version_of_run(state, run) -> str:
    vid = run["pipeline_version_reference"]["pipeline_version_id"]
    (pipeline,) = state.pipelines.values()
    return pipeline["versions"][vid], vid


def test_versions_are_named_by_content_and_a_new_yaml_is_uploaded(tmp_path, monkeypatch):
    import hashlib

    from latent_verbalizer.components.common.version import __version__

    first = _compile(tmp_path / "a.yaml")
    other = _compile(tmp_path / "b.yaml", registry="registry.example.com/team")
    digests = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (first, other)]
    assert digests[0] != digests[1]
    # an installed wheel has no git checkout: the name must not depend on one
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "no-git"))
    with KfpApiServer() as server:
        for package in (first, first, other):
            assert lverb(["submit", "--host", server.url, "--package", package]) == 0
        state = server.state
        names = [_version_of_run(state, run)[0] for run in state.runs.values()]
        assert names == [f"{__version__}-{digests[0][:12]}"] * 2 + [f"{__version__}-{digests[1][:12]}"]
        assert len([r for r in state.requests if r.path.endswith("/upload_version")]) == 2
        # the last run's version holds exactly the newly compiled YAML
        _, vid = _version_of_run(state, list(state.runs.values())[-1])
        assert state.version_uploads[vid]["package"] == open(other, "rb").read()


def test_a_named_version_with_other_content_is_refused(tmp_path, capsys):
    first = _compile(tmp_path / "a.yaml")
    other = _compile(tmp_path / "b.yaml", registry="registry.example.com/team")
    with KfpApiServer() as server:
        assert lverb(["submit", "--host", server.url, "--package", first, "--version", "v1"]) == 0
        assert lverb(["submit", "--host", server.url, "--package", first, "--version", "v1"]) == 0  # same YAML: reused
        assert lverb(["submit", "--host", server.url, "--package", other, "--version", "v1"]) == 2
        err = capsys.readouterr().err
        assert "pipeline version 'v1' exists" in err and "was not made from" in err and "b.yaml" in err
        assert len(server.state.runs) == 2
        assert len([r for r in server.state.requests if r.path.endswith("/upload_version")]) == 1
