"""End to end with the Hugging Face families: the whole pipeline (kfp.local, every step in a
subprocess through the real components) with a tiny ViT + GPT-2 (VisionEncoderDecoder) and a
tiny BLIP, on one shard of the sample photos; the BLIP run's report compares it with the
ViT-GPT2 run (the report step's ``report_compare_prefix``), and the page renders in headless
Chromium with no console errors."""

from __future__ import annotations

import pytest

from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.contracts import CAPTIONS_SCHEMA, read_table, table_metadata
from latent_verbalizer.pipeline.local import make_sample_shards, run_local

PARAMS = {"extract_layers": "all", "categorize_model": "tiny-random"}


@pytest.fixture(scope="module")
def one_shard(tmp_path_factory):
    pattern = make_sample_shards(str(tmp_path_factory.mktemp("shards")), per_shard=4)
    return storage.expand_pattern(pattern)[0]


@pytest.fixture(scope="module")
def vit_gpt2_run(one_shard, tmp_path_factory):
    work = tmp_path_factory.mktemp("vit-gpt2")
    return run_local(dict(PARAMS, shards=one_shard, extract_model="tiny-random-vit-gpt2"), workdir=str(work), cache=False)


def captions_of(run: dict) -> tuple[list[dict], dict]:
    (uri,) = [u for u in storage.list_uris(storage.join(run["storage_prefix"], "captions")) if u.endswith(".parquet")]
    table = read_table(uri, CAPTIONS_SCHEMA)
    return table.to_pylist(), table_metadata(table)["parameters"]


def test_vision_encoder_decoder_through_the_pipeline(vit_gpt2_run):
    rows, made_by = captions_of(vit_gpt2_run)
    assert made_by["model_family"] == "hf-vision-encoder-decoder" and made_by["model"] == "tiny-random-vit-gpt2"
    numbering = made_by["layer_numbering"]
    assert numbering["n_layers"] == 4 and numbering["normal_layer"] == 3 and numbering["labels"][0] == "layer 0"
    assert sorted({r["layer"] for r in rows}) == [0, 1, 2, 3] and len({r["image_key"] for r in rows}) == 4
    assert len({r["caption"] for r in rows}) > 4, "captions vary with the image and the layer"
    html = storage.read_bytes(vit_gpt2_run["report"]).decode()
    assert "4 images x 4 layers" in html and "tiny-random-vit-gpt2" in html
