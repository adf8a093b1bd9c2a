"""LLaVA through the command line: ``lverb extract`` -> ``lverb caption`` on a shard of real
photos, and ``lverb interpret``, with the tiny random LLaVA (the real classes). At the
model's own layer (``vision_feature_layer`` -2) the captions equal the model's own
``generate`` on the same images; features and captions record the family and its layer names."""

from __future__ import annotations

import json

import pytest
import torch

from latent_verbalizer.components.caption.hf_decoders import hf_decoder
from latent_verbalizer.components.common.contracts import CAPTIONS_SCHEMA
from latent_verbalizer.components.common.features import read_manifest
from latent_verbalizer.components.common.model_families import load_model
from latent_verbalizer.components.common.tables import read_table, table_metadata
from latent_verbalizer.components.extract.image_decoding import decode_image
from latent_verbalizer.pipeline.cli import main
from tests.images import skimage_photo_paths, write_tar

N_PHOTOS = 3


def lverb(*args: str) -> None:
    """The ``lverb`` command line, in this process (what the console script calls)."""
    assert main(list(args)) == 0


@pytest.fixture(scope="module")
def llava():
    return load_model("tiny-random-llava")


def own_generate(llava, paths: list[str]) -> list[str]:
    """The model's own captions (its processor, prompt and ``generate``) under the study's rules."""
    decoder = hf_decoder(llava)
    s = decoder.settings
    images = [decode_image(open(p, "rb").read(), target_size=llava.image_size) for p in paths]
    pixels = torch.stack([llava.preprocess(im) for im in images])
    prompt = torch.tensor([decoder.prompt_ids] * len(paths))
    with torch.no_grad():
        out = llava.model.generate(input_ids=prompt, pixel_values=pixels, max_new_tokens=s.seq_len - 1,
                                   min_new_tokens=s.min_seq_len - 1, forced_eos_token_id=s.eos_token_id,
                                   eos_token_id=s.eos_token_id, pad_token_id=s.eos_token_id, do_sample=False, num_beams=1)
    return [llava.caption_text(row[prompt.shape[1]:].tolist()) for row in out]


def test_extract_then_caption_equals_the_models_own_generate(llava, tmp_path):
    photos = skimage_photo_paths()[:N_PHOTOS]
    shard = write_tar(str(tmp_path / "photos-000000.tar"),
                      [(f"photo{i}.jpg", open(p, "rb").read()) for i, p in enumerate(photos)])
    lverb("extract", "--shards", shard, "--out", str(tmp_path / "features"), "--model", "tiny-random-llava",
          "--device", "cpu", "--dtype", "float32")
    features = read_manifest(str(tmp_path / "features" / "photos-000000"))
    n = llava.n_layers
    assert features.model_family == "hf-llava" and features.layers == list(range(n))
    assert features.layer_numbering["labels"] == [f"vision_feature_layer {k + 1}" for k in range(n)]
    assert features.layer_numbering["normal_layer"] == n - 2          # vision_feature_layer -2
    assert (features.tokens, features.width) == (17, 64)              # CLS + 16 patches of the tiny tower

    lverb("caption", "--features", str(tmp_path / "features"), "--out", str(tmp_path / "captions"), "--device", "cpu")
    table = read_table(str(tmp_path / "captions" / "photos-000000" / "captions.parquet"), CAPTIONS_SCHEMA)
    made_by = table_metadata(table)["parameters"]
    assert made_by["model_family"] == "hf-llava" and made_by["prompt"] == "Describe the image in one sentence."
    assert made_by["prompt_token_ids"] == hf_decoder(llava).prompt_ids and made_by["precision"] == "float32"
    rows = table.to_pylist()
    assert len(rows) == N_PHOTOS * n and len({r["caption"] for r in rows}) > N_PHOTOS
    at_normal = {r["image_key"]: r["caption"] for r in rows if r["layer"] == n - 2}
    assert [at_normal[f"photo{i}"] for i in range(N_PHOTOS)] == own_generate(llava, photos)


def test_interpret_prints_every_layer_of_llava(llava, capsys):
    photo = skimage_photo_paths()[0]
    lverb("interpret", photo, "--model", "tiny-random-llava", "--json", "--device", "cpu")
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["layer"] for r in rows] == list(range(llava.n_layers))
    assert rows[llava.n_layers - 2]["caption"] == own_generate(llava, [photo])[0]


def test_feature_size_and_decode_batch_grow_with_the_image_tokens(llava):
    """LLaVA's image tokens sit in the language model's cache for every step: a decode row's
    memory (what sizes the GPU batch) counts the whole prompt, image tokens included."""
    decoder = hf_decoder(llava)
    prompt = len(decoder.prompt_ids)
    per_row = decoder.bytes_per_row(16)
    text = llava.model.config.text_config
    kv = 2 * text.num_hidden_layers * text.num_key_value_heads * (text.hidden_size // text.num_attention_heads) * 4
    assert per_row >= kv * (prompt + decoder.settings.seq_len)
    decoder.prompt_ids = decoder.prompt_ids + [llava.image_token_id] * 560     # as llava-1.5's 576 image tokens would
    assert decoder.bytes_per_row(576) - per_row >= kv * 560


def test_features_of_another_image_size_are_refused(llava):
    decoder = hf_decoder(llava)
    with pytest.raises(ValueError, match="image tokens per image"):
        decoder.generate(torch.zeros(1, 9, llava.model.config.text_config.hidden_size))

