"""The entry points users run, as a GPU machine would run them, on the CPU: under the CUDA
stand-in (tests/cuda_stand_in.py) every step's CLI with ``--device auto``/``cuda`` and every KFP
component's ``.python_func`` with the pipeline's GPU settings must reach real GPU work.

An entry point that fails before it (``torch.cuda.set_device(torch.device("cuda"))`` raising
torch's ValueError, a ``mem_get_info`` of another device, an event on no device) would fail on
every GPU too: that is what once stopped extract on every GPU while every test passed.
"""

from __future__ import annotations

import json

import pytest
from kfp.dsl import Artifact, Dataset

from latent_verbalizer.components.caption.caption import CaptionSettings, run_caption
from latent_verbalizer.components.caption.component import make_caption_op
from latent_verbalizer.components.categorize.component import make_categorize_op
from latent_verbalizer.components.categorize.partitions.split import write_collected_captions
from latent_verbalizer.components.common.devices import REQUIRE_GPU_ENV
from latent_verbalizer.components.extract.component import make_extract_op
from latent_verbalizer.components.extract.extract import ExtractSettings, run_extract
from latent_verbalizer.pipeline.cli import main as lverb
from tests import cuda_stand_in
from tests.cuda_stand_in import CudaStandInReached
from tests.images import jpeg_shard, random_rgb


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    """A shard, its features and captions, made on the CPU before any stand-in is installed."""
    root = tmp_path_factory.mktemp("cuda-entry")
    shard = jpeg_shard(str(root / "g-000000.tar"), 2)
    run_extract([shard], str(root / "features"), ExtractSettings(model="tiny-random-coca", device="cpu", layers="0,3"))
    run_caption(str(root / "features"), str(root / "captions"), CaptionSettings(device="cpu", batch_size="4"))
    image = root / "photo.jpg"
    random_rgb().save(image)
    features = root / "features.json"
    features.write_text(json.dumps({"features": str(root / "features" / "g-000000"), "shard": shard}))
    captions = root / "captions.json"
    captions.write_text(json.dumps({"captions": str(root / "captions" / "g-000000" / "captions.parquet")}))
    return {"root": root, "shard": shard, "image": str(image), "features": str(features), "captions": str(captions)}


@pytest.fixture
def gpu_step(monkeypatch):
    """What a pipeline GPU step sees: LVERB_REQUIRE_GPU=1 and one visible GPU (the stand-in)."""
    monkeypatch.setenv(REQUIRE_GPU_ENV, "1")
    return cuda_stand_in.install(monkeypatch, gpus=1)


def reaches_the_gpu(stand_in, run) -> None:
    with pytest.raises(CudaStandInReached):
        run()
    assert all(index == 0 for _, index in stand_in.calls), stand_in.calls


@pytest.mark.parametrize("device", ["auto", "cuda", "cuda:0"])
def test_lverb_extract_reaches_the_gpu(made, gpu_step, tmp_path, device):
    reaches_the_gpu(gpu_step, lambda: lverb(["extract", "--shards", made["shard"], "--out", str(tmp_path / "f"),
                                             "--model", "tiny-random-coca", "--device", device]))
    assert ("set_device", 0) in gpu_step.calls, "extract makes its GPU current (its copies' events live there)"


def test_extract_component_reaches_the_gpu(made, gpu_step, tmp_path):
    features = Artifact(name="features", uri=str(tmp_path / "features.json"), metadata={})
    reaches_the_gpu(gpu_step, lambda: make_extract_op("unused").python_func(
        shard=made["shard"], storage_prefix=str(tmp_path / "run"), model="tiny-random-coca", pretrained="", layers="0,3",
        dtype="float16", batch_size="auto", features=features))


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_lverb_caption_reaches_the_gpu(made, gpu_step, tmp_path, device):
    reaches_the_gpu(gpu_step, lambda: lverb(["caption", "--features", str(made["root"] / "features"),
                                             "--out", str(tmp_path / "c"), "--device", device]))


def test_caption_component_reaches_the_gpu(made, gpu_step, tmp_path):
    captions = Dataset(name="captions", uri=str(tmp_path / "captions.json"), metadata={})
    features = Artifact(name="features", uri=made["features"], metadata={})
    reaches_the_gpu(gpu_step, lambda: make_caption_op("unused").python_func(
        features=features, storage_prefix=str(tmp_path / "run"), layers="all", precision="float32", batch_size="auto",
        seq_len=30.0, min_seq_len=5.0, pretrained="", captions=captions))


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_lverb_interpret_reaches_the_gpu(made, gpu_step, device):
    reaches_the_gpu(gpu_step, lambda: lverb(["interpret", made["image"], "--model", "tiny-random-coca", "--device", device]))


def test_lverb_categorize_reaches_the_gpu(made, gpu_step, tmp_path):
    reaches_the_gpu(gpu_step, lambda: lverb(["categorize", "--captions", json.loads(open(made["captions"]).read())["captions"],
                                             "--out", str(tmp_path / "l"), "--model", "smollm2-135m", "--gpus", "1"]))


def test_categorize_component_reaches_the_gpu(made, gpu_step, tmp_path):
    labels = Artifact(name="labels", uri=str(tmp_path / "labels.json"), metadata={})
    write_collected_captions(str(tmp_path / "collected.json"), [json.loads(open(made["captions"]).read())["captions"]], [])
    captions = Dataset(name="collected", uri=str(tmp_path / "collected.json"), metadata={})
    reaches_the_gpu(gpu_step, lambda: make_categorize_op("unused").python_func(
        captions=captions, partition="partition-001-of-001", storage_prefix=str(tmp_path / "run"), model="smollm2-135m",
        gpus="1", batch_size="auto", max_answer_parts=0, labels=labels))


def test_the_stand_in_enforces_torchs_argument_rules(monkeypatch):
    """The check can fail: the call that stopped extract on every GPU fails here too, as torch fails it."""
    import torch

    stand_in = cuda_stand_in.install(monkeypatch, gpus=2)
    with pytest.raises(ValueError, match="specified index"):
        torch.cuda.set_device(torch.device("cuda"))
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        torch.cuda.mem_get_info(torch.device("cuda:2"))
    torch.cuda.set_device(torch.device("cuda:1"))
    assert torch.cuda.current_device() == 1 and stand_in.calls == [("set_device", 1)]
    with pytest.raises(CudaStandInReached):
        torch.zeros(1, device="cuda:1")
