"""Issue 20, section 3: preflight says what a run will make and start, as a Markdown artifact,
from the run's own shards and the model's config; time only from rates measured on the run's GPU."""

import json
import os

import pytest
from kfp import dsl

from latent_verbalizer.components.common import storage
from latent_verbalizer.components.preflight.component import make_list_shards_op
from latent_verbalizer.components.preflight.run_size import (
    RATES_FILE,
    MeasuredRates,
    RunPlan,
    RunSize,
    vision_feature_shape,
)
from latent_verbalizer.components.preflight.run_size_page import run_size_markdown, run_size_page
from tests.images import jpeg_shard

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))))


@pytest.fixture
def three_image_shards(s3_bucket, tmp_path):
    for i in range(2):
        path = jpeg_shard(str(tmp_path / f"s-{i:06d}.tar"), 3, start_seed=10 * i)
        storage.write_bytes(f"{s3_bucket}/in/s-{i:06d}.tar", open(path, "rb").read())
    return s3_bucket + "/in/s-{000000..000001}.tar"


@pytest.mark.parametrize("model", ["tiny-random-coca", "tiny-random-blip", "tiny-random-vit-gpt2", "tiny-random-llava"])
def test_feature_shape_from_the_config_is_the_models_own(model):
    """The config-only figure equals what the loaded vision tower puts out (tokens, width of one block)."""
    from latent_verbalizer.components.common.model_families import load_model

    assert vision_feature_shape(model) == tuple(load_model(model, part="vision").feature_shape())


def test_the_studys_model_stores_what_design_md_measured():
    """coca_ViT-L-14: 257 tokens x 1,024 wide x 24 blocks, 25.3 MB per image in float32 (DESIGN.md)."""
    tokens, width = vision_feature_shape("coca_ViT-L-14")
    assert (tokens, width) == (257, 1024) and round(tokens * width * 24 * 4 / 1e6, 1) == 25.3


def test_preflight_writes_the_run_size(three_image_shards, s3_bucket, tmp_path):
    page = dsl.Markdown(uri=str(tmp_path / "run_size.md"))
    uris = make_list_shards_op("example.com/lverb:test").python_func(
        shards=three_image_shards, storage_prefix=s3_bucket + "/run", model="tiny-random-coca", layers="0,2",
        llm_model="tiny-random-llama", llm_gpus="2", run_size=page, dtype="fp16", partitions=3, fan_out=4)
    assert len(uris) == 2
    text = open(page.path).read()
    # 3 images in the first shard x 2 shards; 2 of tiny-random's 6 blocks; 65 tokens (8 x 8 patches + class) x 64 wide
    assert "| images | about 6 (3 in the first shard x 2 shards; other shards may hold more or fewer) |" in text
    assert "| layers captioned | 2 of 6 |" in text and "| (image, layer) captions | 12 |" in text
    assert "| features in storage | 99.8 kB: 12 x 65 tokens x 64 wide x float16 |" in text      # 12 x 65 x 64 x 2 bytes
    assert "| answers to generate | at most 12, one per caption: identical captions are labelled once, but no ratio" in text
    assert "| extract | 2 (one per shard) | 1 | up to 2 (compiled fan-out 4) |" in text
    assert "| categorize | 3 (one per partition) | 2 | 3 (6 GPUs) |" in text
    assert "No time is given: the GPU steps' node selector does not name the GPU" in text


def test_no_time_where_no_rate_is_measured_on_that_gpu(three_image_shards, s3_bucket):
    """The rates this repository measured (none on a GPU yet): a named GPU gets no time, and the page says why."""
    text = run_size_page(storage.expand_pattern(three_image_shards), s3_bucket + "/run", "tiny-random-coca", "", "all",
                         "float16", "float32", "meta-llama/Llama-3.1-70B-Instruct", "8", 1, 4,
                         {"nvidia.com/gpu.product": "NVIDIA-H200"})
    assert ("No rate is measured on NVIDIA-H200 for: extract (model tiny-random-coca, dtype float16); caption (model "
            "tiny-random-coca, precision float32); categorize (model meta-llama/Llama-3.1-70B-Instruct, gpus 8). "
            "No time is given for them") in text
    assert "| extract |" not in text.split("## Time")[1], "no row of times"


def test_time_and_gpu_hours_from_rates_measured_on_the_named_gpu(three_image_shards, s3_bucket, tmp_path):
    rates = {"rates": [
        {"step": "extract", "gpu_product": "NVIDIA-H200", "model": "tiny-random-coca", "dtype": "float16", "rate": 0.002,
         "source": "RESULTS.md, extract on H200"},
        {"step": "caption", "gpu_product": "NVIDIA H200", "model": "tiny-random-coca", "precision": "float32", "rate": 0.01,
         "source": "RESULTS.md, caption on H200"},
        {"step": "caption", "gpu_product": "NVIDIA-H100-80GB-HBM3", "model": "tiny-random-coca", "precision": "float32",
         "rate": 99.0, "source": "another GPU"},
    ], "dedup": []}
    path = tmp_path / "rates.json"
    path.write_text(json.dumps(rates))
    text = run_size_page(storage.expand_pattern(three_image_shards), s3_bucket + "/run", "tiny-random-coca", "", "0,1",
                         "fp16", "fp32", "smollm2-135m", "1", 2, 4, {"nvidia.com/gpu.product": "nvidia-h200"}, str(path))
    # extract: 6 images / 0.002 img/s = 3,000 s = 0.8 GPU-hours; 2 shards at once: 25 min
    assert "| extract | 0.002 images/s per task (RESULTS.md, extract on H200) | 0.8 | 25.0 min with 2 at once |" in text
    # caption: 12 captions / 0.01 captions/s = 1,200 s = 0.3 GPU-hours; 2 at once: 10 min (the H100's rate is not used)
    assert "| caption | 0.01 captions/s per task (RESULTS.md, caption on H200) | 0.3 | 10.0 min with 2 at once |" in text
    assert "No rate is measured on nvidia-h200 for: categorize (model smollm2-135m, gpus 1). No time is given for it" in text


def test_answers_at_the_distinct_ratio_measured_for_the_model():
    """The study's model: 9,449 distinct of 12,000 captions measured; 1,000 images x 24 layers -> about 18,898."""
    plan = RunPlan(shards=["a.tar", "b.tar"], model="coca_ViT-L-14", n_layers=24, layers=list(range(24)),
                   dtype="float16", precision="float32", llm_model="meta-llama/Llama-3.1-70B-Instruct", llm_gpus=8,
                   partitions=4, fan_out=32, gpu=None)
    text = run_size_markdown(RunSize(plan, first_shard_images=500, tokens=257, width=1024), MeasuredRates.load())
    assert "| (image, layer) captions | 24,000 |" in text
    assert "| features in storage | 12.6 GB: 24,000 x 257 tokens x 1024 wide x float16 |" in text   # 12.6 MB per image
    assert ("| answers to generate | about 18,898: 78.7% distinct, the ratio measured for coca_ViT-L-14 on the study's "
            "500 MSCOCO Karpathy test images, 24 layers (9,449 of 12,000 captions;") in text
    assert "| categorize | 4 (one per partition) | 8 | 4 (32 GPUs) |" in text


def test_every_measured_figure_is_the_one_in_results_md():
    results = open(os.path.join(REPO, "benchmarks", "RESULTS.md")).read()
    measured = MeasuredRates.load(RATES_FILE)
    for d in measured.dedup:
        assert f"{d['distinct']} distinct of {d['captions']}" in results, d
    for entry in measured.rates:
        assert entry["source"].split(", ", 1)[-1] in results and str(entry["rate"]) in results, entry
