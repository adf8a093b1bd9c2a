"""Loading the model families by name: a saved folder, an ``s3://`` prefix of one, ``hf:ORG/NAME``
with its weights elsewhere; the errors for names and folders that cannot work; how each
family numbers its layers. Tiny random models of the real classes, a real S3 server, offline."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from latent_verbalizer.components.caption.decoder_factory import make_decoder
from latent_verbalizer.components.caption.interpret import interpret_images
from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.model_families import (
    BLIP,
    COCA,
    LLAVA,
    VISION_ENCODER_DECODER,
    check_model_name,
    load_model,
    model_n_layers,
)
from latent_verbalizer.components.common.model_families.hf_loading import CONFIG_DIR
from latent_verbalizer.components.common.storage.download_cache import STATE_DIR
from tests.images import skimage_photo_paths
from tests.model_folders import save_model_folder

FAMILIES = {"tiny-random-blip": BLIP, "tiny-random-vit-gpt2": VISION_ENCODER_DECODER, "tiny-random-llava": LLAVA}


def upload_folder(folder: str, prefix: str) -> str:
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            storage.write_bytes(f"{prefix}/{name}", f.read())
    return prefix


def assert_same_weights(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def captions(model: str, pretrained: str | None = None) -> list[tuple[int, list[int]]]:
    """Every layer's caption tokens of two photos, as ``lverb interpret`` makes them from the model's name."""
    rows = interpret_images(skimage_photo_paths()[:2], model=model, pretrained=pretrained, device="cpu")
    return [(r.layer, r.token_ids) for r in rows]


def captions_of(loaded) -> list[tuple[int, list[int]]]:
    """The same, from a model already loaded."""
    from PIL import Image

    decoder = make_decoder(loaded)
    rows = []
    for path in skimage_photo_paths()[:2]:
        pixels = loaded.preprocess(Image.open(path).convert("RGB"))[None]
        blocks = loaded.vision_block_outputs(pixels, list(range(loaded.n_layers)))
        out = decoder.generate(torch.cat([decoder.image_embeddings(b) for b in blocks]))
        rows += list(enumerate(out.token_ids))
    return rows


@pytest.fixture(scope="module", params=list(FAMILIES))
def tiny(request):
    return load_model(request.param)


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    """(the model's folder, the captions of the tiny model itself)."""
    folder = save_model_folder(tiny, tmp_path_factory.mktemp("models") / tiny.name)
    return folder, captions_of(tiny)


@pytest.fixture
def model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LVERB_MODEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ---------------------------------------------------------------- a folder, an s3:// prefix, hf: + pretrained

def test_saved_folder_loads_the_same_model(tiny, saved):
    folder, own_captions = saved
    assert any(f.endswith(".safetensors") for f in os.listdir(folder))
    again = load_model(folder)
    assert again.family == FAMILIES[tiny.name]
    assert_same_weights(tiny, again)
    assert again.identity()["model"] == again.identity()["pretrained"] == folder
    assert model_n_layers(folder) == tiny.n_layers
    assert captions(folder) == own_captions
    assert len({tuple(ids) for _, ids in own_captions}) > 1


def test_s3_prefix_loads_the_same_model(tiny, saved, s3_bucket, model_cache):
    folder, own_captions = saved
    prefix = upload_folder(folder, f"{s3_bucket}/models/{tiny.name}")
    assert model_n_layers(prefix) == tiny.n_layers     # reads the config alone
    downloaded = [p.name for p in model_cache.rglob("*") if p.is_file() and STATE_DIR not in p.parts]
    assert "config.json" in downloaded and all(name.endswith("config.json") for name in downloaded), downloaded

    from_s3 = load_model(prefix)
    assert from_s3.family == FAMILIES[tiny.name] and from_s3.name == prefix
    assert_same_weights(tiny, from_s3)
    assert captions_of(from_s3) == own_captions

    hub_name = "hf:some-org/" + tiny.name      # never asked for: the weights come from the prefix
    from_hub_name = load_model(hub_name, pretrained=prefix)
    assert from_hub_name.identity()["model"] == hub_name and from_hub_name.identity()["pretrained"] == prefix
    assert_same_weights(tiny, from_hub_name)
    assert model_n_layers(hub_name, prefix) == tiny.n_layers
    assert captions_of(from_hub_name) == own_captions


# ---------------------------------------------------------------- no pickle

class _RunsWhenUnpickled:
    """Unpickling this creates a file: the proof that pickled code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_bin_weights_are_read_as_tensors_only(tmp_path, s3_bucket, model_cache):
    """A model with only ``pytorch_model.bin`` (as nlpconnect/vit-gpt2-image-captioning ships) loads
    through torch's weights-only unpickler; a .bin whose unpickling would run code is refused, and
    the code never runs -- locally and from S3."""
    tiny = load_model("tiny-random-blip")
    plain = save_model_folder(tiny, tmp_path / "plain-bin")
    os.remove(os.path.join(plain, "model.safetensors"))
    torch.save(tiny.model.state_dict(), os.path.join(plain, "pytorch_model.bin"))
    assert_same_weights(tiny, load_model(plain))
    assert_same_weights(tiny, load_model(upload_folder(plain, f"{s3_bucket}/plain-bin")))

    hostile = save_model_folder(tiny, tmp_path / "hostile-bin")
    os.remove(os.path.join(hostile, "model.safetensors"))
    marker = tmp_path / "pickle-code-ran"
    state = dict(tiny.model.state_dict(), payload=_RunsWhenUnpickled(str(marker)))
    torch.save(state, os.path.join(hostile, "pytorch_model.bin"))
    with pytest.raises(ValueError, match=r"holds more than tensors .* convert it to safetensors"):
        load_model(hostile)
    with pytest.raises(ValueError, match="holds more than tensors"):
        load_model(upload_folder(hostile, f"{s3_bucket}/hostile-bin"))
    assert not marker.exists(), "code in the pickled weights ran"

    # beside safetensors (as many hub folders hold both), a .bin is not even fetched from S3
    both = save_model_folder(tiny, tmp_path / "both")
    torch.save(state, os.path.join(both, "pytorch_model.bin"))
    assert_same_weights(tiny, load_model(upload_folder(both, f"{s3_bucket}/both")))
    both_slot = [d for d in (model_cache / "prefixes").iterdir() if d.name.endswith("-both")]
    assert len(both_slot) == 1 and (both_slot[0] / "model.safetensors").exists()
    assert not marker.exists() and not list(both_slot[0].rglob("*.bin"))


# ---------------------------------------------------------------- names and folders that cannot work

def test_hub_names_need_org_and_name():
    for bad in ("hf:onlyname", "hf:", "hf:/name", "hf:a/b/c"):
        for call in (model_n_layers, load_model, check_model_name):
            with pytest.raises(ValueError, match=r"write hub models as hf:ORG/NAME"):
                call(bad)


def test_folder_without_config_json_is_told_what_it_needs(tmp_path, s3_bucket, model_cache):
    folder = tmp_path / "no-config"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    for call in (model_n_layers, load_model):
        with pytest.raises(FileNotFoundError, match=r"no config\.json in .*give a Hugging Face model folder"):
            call(str(folder))
    prefix = upload_folder(str(folder), f"{s3_bucket}/no-config")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_model(prefix)
    with pytest.raises(ValueError, match="unknown model"):       # not a folder: named as the CoCa architectures are
        load_model(str(tmp_path / "not-there"))


def test_unsupported_architecture_names_the_supported_classes(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    from transformers import CLIPConfig

    CLIPConfig(architectures=["CLIPModel"]).to_json_file(str(folder / "config.json"))
    for call in (model_n_layers, load_model):
        with pytest.raises(ValueError, match=r"model class \['CLIPModel'\] is not supported: latent captions need a "
                                             r"text decoder .*BlipForConditionalGeneration"):
            call(str(folder))


def test_open_clip_tag_as_pretrained_of_a_hub_model_is_refused():
    for model in ("hf:Salesforce/blip-image-captioning-large", "tiny-random-blip"):
        for call in (model_n_layers, load_model):
            with pytest.raises(ValueError, match=r"leave it empty for the model itself \(open_clip pretrained tags "
                                                 r"are for CoCa models only\)"):
                call(model, "mscoco_finetuned_laion2B-s13B-b90k")


def test_llava_reading_several_layers_is_refused(tmp_path):
    folder = tmp_path / "llava-multi"
    shutil.copytree(os.path.join(CONFIG_DIR, "tiny-random-llava"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["vision_feature_layer"] = [-2, -1]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="concatenates several layers; only models that read one layer"):
        load_model(str(folder), pretrained="random")


def test_n_layers_from_the_config_alone():
    assert model_n_layers("tiny-random-coca") == load_model("tiny-random-coca").n_layers == 6
    for name in FAMILIES:
        assert model_n_layers(name) == 4


# ---------------------------------------------------------------- each model's own layer numbering

def test_layer_numbering_of_each_family():
    expected = {  # model -> (family, normal layer, label of block 0, label of the normal layer)
        "tiny-random-coca": (COCA, 5, "block 0", "block 5"),
        "tiny-random-blip": (BLIP, 3, "layer 0", "layer 3"),
        "tiny-random-vit-gpt2": (VISION_ENCODER_DECODER, 3, "layer 0", "layer 3"),
        # vision_feature_layer -2: the second-to-last block, which the model names by its hidden_states index
        "tiny-random-llava": (LLAVA, 2, "vision_feature_layer 1", "vision_feature_layer 3"),
    }
    for name, (family, normal, first, normal_label) in expected.items():
        loaded = load_model(name)
        numbering = loaded.layer_numbering()
        assert loaded.family == family
        assert numbering.n_layers == loaded.n_layers == len(numbering.labels)
        assert numbering.normal_layer == normal
        assert numbering.labels[0] == first and numbering.labels[normal] == normal_label
        assert len(set(numbering.labels)) == numbering.n_layers
        recorded = loaded.identity()
        assert recorded["model_family"] == family and recorded["layer_numbering"]["labels"] == list(numbering.labels)


def test_llava_normal_layer_follows_its_vision_feature_layer():
    loaded = load_model("tiny-random-llava")
    for feature_layer, normal in ((-1, 3), (-2, 2), (1, 0), (4, 3)):
        loaded.model.config.vision_feature_layer = feature_layer
        numbering = loaded.layer_numbering()
        assert numbering.normal_layer == normal
        assert numbering.labels[normal] == f"vision_feature_layer {normal + 1}"
