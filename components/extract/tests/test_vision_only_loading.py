"""Extract loads only the vision tower of a model: the same features as the whole model gives,
for every family (CoCa from a safetensors checkpoint, the Hugging Face ones from their folders),
at a fraction of the host memory when the language model is big (measured in a fresh process).
Real open_clip and transformers classes, real safetensors files, offline."""

from __future__ import annotations

import os

import pytest
import torch

from latent_verbalizer.components.common.features import iter_feature_chunks
from latent_verbalizer.components.common.model_families import COCA, LLAVA, VISION, load_model
from latent_verbalizer.components.common.model_families.hf_loading import CONFIG_DIR
from latent_verbalizer.components.common.tar_samples import iter_samples
from latent_verbalizer.components.extract.extract import ExtractSettings, run_extract
from latent_verbalizer.components.extract.image_decoding import decode_image
from tests.images import skimage_photo_paths
from tests.model_folders import load_peak_memory, write_random_model_folder


@pytest.fixture(scope="module")
def photo_shard(tmp_path_factory):
    from latent_verbalizer.components.extract.shards import write_shards

    folder = tmp_path_factory.mktemp("photos")
    for p in skimage_photo_paths()[:3]:
        os.symlink(p, folder / os.path.basename(p))
    return write_shards(str(folder), str(tmp_path_factory.mktemp("shards")), per_shard=100)[0]


def saved(loaded, folder) -> tuple[str, str | None]:
    """(model, pretrained) naming the model saved as real checkpoints are: a Hugging Face folder
    (``save_pretrained``), or CoCa's open_clip state dict in one safetensors file."""
    os.makedirs(folder)
    if loaded.family == COCA:
        from safetensors.torch import save_file

        file = os.path.join(folder, "open_clip_model.safetensors")
        save_file({k: v.contiguous() for k, v in loaded.model.state_dict().items()}, file)
        return loaded.name, file
    loaded.model.save_pretrained(folder)
    for part in ([loaded.processor] if loaded.family == LLAVA else [loaded.tokenizer, loaded.image_processor]):
        part.save_pretrained(folder)
    return str(folder), None


@pytest.mark.parametrize("tiny", ["tiny-random-coca", "tiny-random-blip", "tiny-random-vit-gpt2", "tiny-random-llava"])
def test_extract_features_from_the_tower_alone_equal_the_whole_models(tiny, photo_shard, tmp_path):
    model, pretrained = saved(load_model(tiny), tmp_path / "model")
    whole = load_model(model, pretrained)

    tower_only = load_model(model, pretrained, part=VISION)
    tower = tower_only.vision_tower()
    rest = [p for p in tower_only.model.parameters() if all(p is not q for q in tower.parameters())]
    assert rest and all(p.is_meta for p in rest)  # the language side was never loaded
    assert not any(p.is_meta for p in tower.parameters())
    assert tower_only.layer_numbering() == whole.layer_numbering()

    out = tmp_path / "features"
    settings = ExtractSettings(model=model, pretrained=pretrained, dtype="float32", device="cpu", batch_size=2)
    result = run_extract([photo_shard], str(out), settings)
    assert not result.failed
    chunks = list(iter_feature_chunks(str(out / "shard-000000")))
    pixels = torch.stack([whole.preprocess(decode_image(s.image_bytes()[1])) for s in iter_samples(photo_shard, [])])
    expected = whole.vision_block_outputs(pixels, list(range(whole.n_layers)))
    for layer in range(whole.n_layers):
        assert torch.equal(torch.cat([c.layers[layer] for c in chunks]), expected[layer])  # bit for bit


def test_extract_of_a_model_with_a_big_language_model_loads_a_fraction_of_it(tmp_path):
    """A LLaVA folder whose language model holds ~200 MB of float16 weights in three shards (as
    llava-1.5 is stored) next to a tiny vision tower: loading it for extract costs what loading
    the same tower next to a tiny language model costs (the growth does not depend on the
    language model), while the whole-model load, measured the same way, pays for every weight.

    Compared against the small folder rather than against a fixed share of the weights: the
    load's fixed cost (lazy imports, the first forward) differs between machines (28 MB here,
    57 MB on the CI machine) and says nothing about what is loaded."""
    from transformers import AutoConfig, LlavaForConditionalGeneration

    def folder_with_language_model(name, **sizes):
        config = AutoConfig.from_pretrained(os.path.join(CONFIG_DIR, "tiny-random-llava"))
        for key, value in sizes.items():
            setattr(config.text_config, key, value)
        folder = str(tmp_path / name)
        weight_bytes = write_random_model_folder(LlavaForConditionalGeneration, config, folder, "tiny-random-llava",
                                                 dtype=torch.float16, shard_bytes=80 << 20)
        return folder, weight_bytes

    big, weight_bytes = folder_with_language_model(
        "llava-big-language-model", hidden_size=512, intermediate_size=2048, num_hidden_layers=24,
        num_attention_heads=8, num_key_value_heads=8, head_dim=64)
    small, small_bytes = folder_with_language_model("llava-tiny-language-model")
    assert weight_bytes > 200e6 and small_bytes < 20e6
    assert os.path.isfile(os.path.join(big, "model.safetensors.index.json"))

    def grown(measured):
        return (measured["peak_kib"] - measured["baseline_kib"]) * 1024

    tower_big, tower_small, whole = (load_peak_memory(big, VISION), load_peak_memory(small, VISION),
                                     load_peak_memory(big, None))
    assert grown(whole) > 2 * weight_bytes  # float32 copies of every float16 weight: the measurement sees them
    extra = grown(tower_big) - grown(tower_small)
    assert extra < weight_bytes / 10, {"tower, big": grown(tower_big), "tower, small": grown(tower_small)}
    assert (tower_big["tokens"], tower_big["width"]) == (whole["tokens"], whole["width"])
