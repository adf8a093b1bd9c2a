"""On a GPU, what users run: each step's CLI with ``--device auto``, each KFP component's
``.python_func`` as a pipeline GPU step runs it (``LVERB_REQUIRE_GPU=1``), and ``lverb run --local``
end to end; then CoCa ViT-L/14 with random weights at the real size through the CLIs.

The CPU suite checks the same entry points under a CUDA stand-in (tests/test_entry_points_on_cuda.py),
which stops at the first real GPU work; here they run to the end, and their outputs are checked
to say they ran on the GPU. ``benchmarks/gpu_check.sh`` runs this file with the rest of ``-m gpu``.
"""

from __future__ import annotations

import json
import time

import pytest
from kfp.dsl import Artifact, Dataset

from latent_verbalizer.components.caption.component import make_caption_op
from latent_verbalizer.components.categorize.component import make_categorize_op
from latent_verbalizer.components.common.contracts import CAPTIONS_SCHEMA
from latent_verbalizer.components.common.devices import REQUIRE_GPU_ENV
from latent_verbalizer.components.common.features import read_manifest
from latent_verbalizer.components.common.tables import read_table
from latent_verbalizer.components.extract.component import make_extract_op
from latent_verbalizer.pipeline.cli import main as lverb
from tests.gpu import GPU_ONLY, report
from tests.images import jpeg_shard, skimage_photo_paths

pytestmark = GPU_ONLY


def lverb_ok(*argv: str) -> float:
    """Run ``lverb ARGV`` in this process (as the console script does); its seconds. Fails on a non-zero exit."""
    t0 = time.perf_counter()
    assert lverb(["-v", *argv]) == 0, f"lverb {' '.join(argv)} failed"
    return time.perf_counter() - t0


@pytest.fixture(scope="module")
def shard(tmp_path_factory) -> str:
    return jpeg_shard(str(tmp_path_factory.mktemp("gpu-entry") / "e-000000.tar"), 8, size=(320, 240))


@pytest.mark.parametrize("model", ["tiny-random-coca", "tiny-random-blip", "tiny-random-vit-gpt2", "tiny-random-llava"])
def test_step_clis_with_device_auto(shard, tmp_path, model):
    """lverb extract, caption and interpret with --device auto: they pick the GPU and record it."""
    features, captions = tmp_path / "features", tmp_path / "captions"
    seconds = [lverb_ok("extract", "--shards", shard, "--out", str(features), "--model", model, "--device", "auto"),
               lverb_ok("caption", "--features", str(features), "--out", str(captions), "--device", "auto")]
    manifest = read_manifest(str(features / "e-000000"))
    assert manifest.image_count == 8 and manifest.made_by["parameters"]["device"] == "cuda:0"
    table = read_table(str(captions / "e-000000" / "captions.parquet"), CAPTIONS_SCHEMA)
    assert table.num_rows == 8 * len(manifest.layers)
    seconds.append(lverb_ok("interpret", skimage_photo_paths()[0], "--model", model, "--device", "auto", "--json"))
    report(f"entry points on the GPU: {model}", [f"- lverb extract / caption / interpret --device auto: "
                                                  f"{seconds[0]:.1f} s / {seconds[1]:.1f} s / {seconds[2]:.1f} s"])


def test_kfp_components_as_pipeline_gpu_steps(shard, tmp_path, monkeypatch):
    """extract, caption and categorize as the pipeline's pods run them: LVERB_REQUIRE_GPU=1, device auto."""
    monkeypatch.setenv(REQUIRE_GPU_ENV, "1")
    prefix = str(tmp_path / "run")
    features = Artifact(name="features", uri=str(tmp_path / "features.json"), metadata={})
    make_extract_op("unused").python_func(shard=shard, storage_prefix=prefix, model="tiny-random-coca", pretrained="",
                                          layers="all", dtype="float16", batch_size="auto", features=features)
    captions = Dataset(name="captions", uri=str(tmp_path / "captions.json"), metadata={})
    make_caption_op("unused").python_func(features=features, storage_prefix=prefix, layers="all", precision="float32",
                                          batch_size="auto", seq_len=30.0, min_seq_len=5.0, pretrained="",
                                          captions=captions)
    labels = Artifact(name="labels", uri=str(tmp_path / "labels.json"), metadata={})
    # tiny-random-llama: a random Llama with Llama-3's tokenizer (the GPU machine gets the tokenizer, not SmolLM2's GGUF)
    make_categorize_op("unused").python_func(captions=[captions], storage_prefix=prefix, model="tiny-random-llama", gpus="1",
                                             batch_size="auto", max_answer_parts=5, labels=labels)
    summary = json.loads(open(labels.path).read())["summary"]
    assert summary["unique_captions"] > 0 and summary["layout"]["groups"] == [[0]], summary  # labelled on GPU 0


def test_lverb_run_local_end_to_end_on_the_gpu(tmp_path, monkeypatch):
    """The whole pipeline through kfp.local on the GPU, tiny models: the report is written."""
    monkeypatch.chdir(tmp_path)
    seconds = lverb_ok("run", "--local", "--params",
                       '{"extract_batch_size": "auto", "caption_batch_size": "auto", "categorize_model": "tiny-random-llama"}')
    reports = list(tmp_path.glob("runs/*/data/report/report.html"))
    assert reports, "lverb run --local wrote no report"
    report("lverb run --local on the GPU (tiny models)", [f"- whole pipeline: {seconds:.0f} s"])


def test_coca_vit_l14_at_the_real_size_through_the_clis(tmp_path):
    """The study's architecture with random weights at its real size (24 blocks, 255 tokens of 1,024):
    extract in float16 and caption in float32 through the CLIs, every layer."""
    shard = jpeg_shard(str(tmp_path / "l-000000.tar"), 16, size=(640, 480))
    features, captions = tmp_path / "features", tmp_path / "captions"
    extract_s = lverb_ok("extract", "--shards", shard, "--out", str(features), "--model", "coca_ViT-L-14",
                         "--pretrained", "random", "--device", "auto")
    caption_s = lverb_ok("caption", "--features", str(features), "--out", str(captions), "--device", "auto")
    manifest = read_manifest(str(features / "l-000000"))
    assert manifest.layers == list(range(24)) and (manifest.tokens, manifest.width) == (255, 1024)
    table = read_table(str(captions / "l-000000" / "captions.parquet"), CAPTIONS_SCHEMA)
    assert table.num_rows == 16 * 24
    report("CoCa ViT-L/14 (random weights) through the CLIs", [
        f"- lverb extract, 16 images x 24 blocks, fp16: {extract_s:.1f} s (model load included)",
        f"- lverb caption, 384 captions, fp32: {caption_s:.1f} s ({384 / caption_s:.0f} captions/s, load included)"])
