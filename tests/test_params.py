"""``--params`` as users write it: the documented key=value examples, commas inside values,
and several ``--params``."""

import os
import re

import pytest

from latent_verbalizer.pipeline.cli import main as lverb
from latent_verbalizer.pipeline.commands import PARAMS_HELP
from latent_verbalizer.pipeline.params import parse_params
from tests.kfp_api_server import KfpApiServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_readme_example_parses():
    readme = open(os.path.join(REPO, "README.md")).read()
    example = re.search(r"lverb run --local --params \\\n\s*(\S+)", readme).group(1)
    assert parse_params(example) == {"extract_model": "coca_ViT-L-14",
                                     "extract_pretrained": "mscoco_finetuned_laion2B-s13B-b90k",
                                     "categorize_model": "meta-llama/Llama-3.1-8B-Instruct"}


def test_the_help_example_keeps_commas_in_a_value():
    example = re.search(r"e\.g\. (\S+)\)", PARAMS_HELP).group(1)
    assert parse_params(example) == {"extract_model": "coca_ViT-L-14", "extract_layers": "0,5,23"}
    assert parse_params("extract_layers=0,5,23") == {"extract_layers": "0,5,23"}
    assert parse_params("extract_layers=0,5,23,categorize_gpus=4,shards=s3://b/x-{000..004}.tar") == {
        "extract_layers": "0,5,23", "categorize_gpus": 4, "shards": "s3://b/x-{000..004}.tar"}
    assert parse_params('{"extract_layers": "0,5,23"}') == {"extract_layers": "0,5,23"}


def test_several_params_are_merged_and_a_repeated_key_refused():
    assert parse_params(["extract_layers=0,5", '{"categorize_gpus": "2"}', "report_title=a=b"]) == {
        "extract_layers": "0,5", "categorize_gpus": "2", "report_title": "a=b"}
    with pytest.raises(ValueError, match="extract_layers is given twice"):
        parse_params(["extract_layers=0,5", "extract_layers=1"])
    with pytest.raises(ValueError, match="extract_layers is given twice"):
        parse_params("extract_layers=0,extract_layers=1")
    with pytest.raises(ValueError, match="'0,5' is not key=value"):
        parse_params("0,5")
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_params("{extract_layers: 1}")


def test_submit_sends_every_params_value(tmp_path, capsys):
    from latent_verbalizer.pipeline.compile import compile_pipeline

    package = compile_pipeline(str(tmp_path / "p.yaml"))
    with KfpApiServer() as server:
        assert lverb(["submit", "--host", server.url, "--package", package,
                      "--params", "extract_layers=0,5,23,categorize_gpus=4",
                      "--params", "extract_model=coca_ViT-L-14"]) == 0
        (run,) = server.state.runs.values()
        assert run["runtime_config"]["parameters"] == {"extract_layers": "0,5,23", "categorize_gpus": "4",
                                                       "extract_model": "coca_ViT-L-14"}
        assert lverb(["submit", "--host", server.url, "--package", package,
                      "--params", "extract_layers=0", "--params", "extract_layers=5"]) == 2
        assert "extract_layers is given twice" in capsys.readouterr().err
        assert len(server.state.runs) == 1


def test_a_local_run_on_random_weights_says_so():
    from latent_verbalizer.pipeline.commands import random_weights_lines
    from latent_verbalizer.pipeline.local import LOCAL_DEFAULTS

    demo = {"params": dict(LOCAL_DEFAULTS)}
    assert random_weights_lines(demo) == [
        "RANDOM WEIGHTS: tiny-random-coca / random is an untrained model; its captions say nothing about what a trained "
        "encoder sees (the study's model is coca_ViT-L-14 with its default weights)"]
    compared = {"params": dict(LOCAL_DEFAULTS, extract_model="tiny-random-blip"), "first": demo}
    assert [line.split(" is ")[0] for line in random_weights_lines(compared)] == [
        "RANDOM WEIGHTS: tiny-random-coca / random", "RANDOM WEIGHTS: tiny-random-blip / random"]
    real = {"params": dict(LOCAL_DEFAULTS, extract_model="coca_ViT-L-14", extract_pretrained="/w/ckpt.safetensors")}
    assert random_weights_lines(real) == []
