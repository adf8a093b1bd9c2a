"""End to end with the Hugging Face families: the whole pipeline (kfp.local, every step in a
subprocess through the real components) with a tiny ViT + GPT-2 (VisionEncoderDecoder) and a
tiny BLIP, on one shard of the sample photos; the BLIP run's report compares it with the
ViT-GPT2 run (the report step's ``report_compare_prefix``), and the page renders in headless
Chromium with no console errors."""

from __future__ import annotations

import os

import pytest

from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.contracts import CAPTIONS_SCHEMA
from latent_verbalizer.components.common.tables import read_table, table_metadata
from latent_verbalizer.pipeline.local import make_sample_shards, run_local

PARAMS = {"extract_layers": "all", "categorize_model": "tiny-random-llama"}


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


@pytest.fixture(scope="module")
def blip_run(one_shard, vit_gpt2_run, tmp_path_factory):
    """BLIP on the same shard; its report step compares it with the ViT-GPT2 run."""
    work = tmp_path_factory.mktemp("blip")
    return run_local(dict(PARAMS, shards=one_shard, extract_model="tiny-random-blip",
                          report_compare_prefix=vit_gpt2_run["storage_prefix"]), workdir=str(work), cache=False)


def test_blip_through_the_pipeline_compared_with_vit_gpt2_in_chromium(blip_run, vit_gpt2_run, tmp_path):
    from tests.headless_chromium import CHROMIUM, Chromium

    rows, made_by = captions_of(blip_run)
    assert made_by["model_family"] == "hf-blip" and made_by["layer_numbering"]["normal_layer"] == 3
    assert sorted({r["layer"] for r in rows}) == [0, 1, 2, 3] and len({r["caption"] for r in rows}) > 4
    other, _ = captions_of(vit_gpt2_run)
    first_key = sorted(r["image_key"] for r in rows)[0]
    blip_caption = {r["layer"]: r["caption"] for r in rows if r["image_key"] == first_key}
    vit_gpt2_caption = {r["layer"]: r["caption"] for r in other if r["image_key"] == first_key}
    assert blip_caption != vit_gpt2_caption

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is needed (apt-get install -y chromium; scripts/setup.sh installs it)"
    with Chromium() as browser:
        browser.open(blip_run["report"])
        browser.wait_for("window.__lverb && window.__lverb.ready")
        browser.wait_for("window.__lverbCompare && window.__lverbCompare.ready")
        assert browser.eval("document.getElementById('cmp-count').textContent") == "4 of 4 shared images"
        card = browser.eval("""Array.from(document.querySelectorAll('#cmp-results .img-card')).map(c => [c.getAttribute('data-key'),
            Array.from(c.querySelectorAll('tr[data-depth]')).map(r => Array.from(r.children).map(td => td.textContent))])""")
        key, depth_rows = card[0]
        assert key == first_key and len(depth_rows) == 4    # both models have 4 layers: depths 0.25 .. 1
        for k, cells in enumerate(depth_rows):               # [depth, A label, A caption, A entropy, B label, B caption, ...]
            assert cells[1] == cells[4] == f"layer {k}"      # both number their blocks "layer k"
            assert {cells[2], cells[5]} == {blip_caption[k], vit_gpt2_caption[k]}
        assert browser.errors == [], browser.errors
