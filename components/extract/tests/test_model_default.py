"""No random model unless named: the study's model by default, random weights said out loud."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from latent_verbalizer.components.caption.interpret import interpret_images
from latent_verbalizer.components.extract.extract import ExtractSettings
from latent_verbalizer.components.extract.shards import write_shards
from latent_verbalizer.pipeline.cli import build_parser
from tests.images import skimage_photo_paths

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    os.symlink(skimage_photo_paths()[0], folder / "photo.jpg")
    return write_shards(str(folder), str(tmp_path_factory.mktemp("shards")))[0]


def lverb(args, tmp_path):
    """The CLI as a user runs it, offline with an empty Hugging Face cache."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    return subprocess.run([sys.executable, "-m", "latent_verbalizer.pipeline.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_default_model_is_the_studys_everywhere():
    import inspect

    assert ExtractSettings().model == "coca_ViT-L-14"
    assert inspect.signature(interpret_images).parameters["model"].default == "coca_ViT-L-14"
    parser = build_parser()
    assert parser.parse_args(["extract", "--shards", "s", "--out", "o"]).model == "coca_ViT-L-14"
    assert parser.parse_args(["interpret", "x.jpg"]).model == "coca_ViT-L-14"


def test_without_model_offline_extract_says_it_cannot_download(shard, tmp_path):
    proc = lverb(["extract", "--shards", shard, "--out", str(tmp_path / "f"), "--device", "cpu"], tmp_path)
    assert proc.returncode == 2
    assert "could not download coca_ViT-L-14 weights" in proc.stderr
    assert "RANDOM WEIGHTS" not in proc.stdout + proc.stderr


def test_without_model_offline_interpret_says_it_cannot_download(tmp_path):
    proc = lverb(["interpret", skimage_photo_paths()[0], "--device", "cpu"], tmp_path)
    assert proc.returncode == 2 and "could not download coca_ViT-L-14 weights" in proc.stderr


def test_random_weights_say_so_in_every_cli(shard, tmp_path):
    extract = lverb(["extract", "--shards", shard, "--out", str(tmp_path / "f"), "--model", "tiny-random-coca",
                     "--device", "cpu", "--layers", "0,5"], tmp_path)
    assert extract.returncode == 0, extract.stderr
    assert "RANDOM WEIGHTS: tiny-random-coca / random is an untrained model" in extract.stdout
    caption = lverb(["caption", "--features", str(tmp_path / "f"), "--out", str(tmp_path / "c"), "--device", "cpu"],
                    tmp_path)
    assert caption.returncode == 0, caption.stderr
    assert "RANDOM WEIGHTS: tiny-random-coca / random" in caption.stdout
    table = lverb(["interpret", skimage_photo_paths()[0], "--model", "tiny-random-coca", "--layers", "0", "--device", "cpu"],
                  tmp_path)
    assert table.returncode == 0 and "RANDOM WEIGHTS" in table.stdout
    as_json = lverb(["interpret", skimage_photo_paths()[0], "--model", "tiny-random-vit-gpt2", "--layers", "0",
                     "--device", "cpu", "--json"], tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    assert "RANDOM WEIGHTS: tiny-random-vit-gpt2" in as_json.stderr and "RANDOM" not in as_json.stdout
