"""A Hugging Face model's generation config decides its captions as it decides its own ``generate``:
several end tokens (Llama-3- and Qwen2-based conversions list them), the settings greedy decoding
honours (repetition penalty, banned n-grams, bad words, suppressed tokens, a forced first token),
and a VisionEncoderDecoder's start token. Each model is a tiny random model of the real class saved
as a local folder whose ``generation_config.json`` is edited; at the layer the model normally
captions from, our cached loop gives the model's own ``generate`` tokens, and at every layer the
plain reference loop's."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from latent_verbalizer.components.caption.caption import CaptionSettings, decoder_end_and_rules, run_caption
from latent_verbalizer.components.caption.decoder_factory import make_decoder
from latent_verbalizer.components.caption.greedy import GreedySettings
from latent_verbalizer.components.common.contracts import CAPTIONS_SCHEMA
from latent_verbalizer.components.common.model_families import LLAVA, load_model
from latent_verbalizer.components.common.tables import read_table, table_metadata
from latent_verbalizer.components.extract.extract import ExtractSettings, run_extract
from tests.hf_decoding_checks import (
    assert_same_as_reference,
    models_own_end_token,
    ours_at,
    own_generate,
    reference_rows,
)
from tests.images import jpeg_shard, skimage_photo_paths
from tests.model_folders import save_model_folder

FAMILIES = ("tiny-random-vit-gpt2", "tiny-random-llava")
SETTINGS = GreedySettings(seq_len=16, min_seq_len=5)


@pytest.fixture(scope="module", params=FAMILIES)
def base(request):
    return load_model(request.param)


@pytest.fixture(scope="module")
def pixels(base):
    from PIL import Image

    return torch.stack([base.preprocess(Image.open(p).convert("RGB")) for p in skimage_photo_paths()[:6]])


def every_layer_inputs(loaded, pixels) -> torch.Tensor:
    blocks = loaded.vision_block_outputs(pixels[:3], list(range(loaded.n_layers)))
    with torch.no_grad():
        return torch.cat([loaded.decoder_inputs(b) for b in blocks])


def plain_captions(base, pixels) -> list[list[int]]:
    return ours_at(base, pixels, base.layer_numbering().normal_layer, SETTINGS).token_ids


# ---------------------------------------------------------------- several end tokens

def test_several_end_tokens_end_captions_as_the_models_own_generate(base, pixels, tmp_path):
    plain = plain_captions(base, pixels)
    primary = models_own_end_token(base)
    # a second end token the captions produce mid-caption, some before min_seq_len: it must be banned
    # there, and end the caption where it comes later
    allowed_from = SETTINGS.min_seq_len - 1   # index of the first generated token the end tokens may be
    counts = Counter(t for ids in plain for t in set(ids[allowed_from:-1]) - {primary})
    early = {t for ids in plain for t in ids[:allowed_from]}
    second = max(counts, key=lambda t: (t in early, counts[t], -t))
    assert any(second in ids[:allowed_from] for ids in plain), "the second end token should also come too early"
    loaded = load_model(save_model_folder(base, tmp_path / "m", eos_token_id=[primary, second]))
    ours = ours_at(loaded, pixels, loaded.layer_numbering().normal_layer, SETTINGS)
    assert ours.token_ids == own_generate(loaded, pixels, SETTINGS)
    assert loaded.end_token_ids == (primary, second) and loaded.eos_token_id == primary
    assert ours.token_ids != plain
    ended_by_second = [i for i, ids in enumerate(ours.token_ids) if ids[-1] == second]
    assert ended_by_second and all(ours.stop[i] == "eos" and len(ours.token_ids[i]) >= SETTINGS.min_seq_len
                                   for i in ended_by_second)
    assert all(len(ids) < SETTINGS.seq_len - 1 or ids[-1] == primary for ids in ours.token_ids)  # forced: the first
    assert_same_as_reference(loaded, every_layer_inputs(loaded, pixels), SETTINGS)
    assert decoder_end_and_rules(make_decoder(loaded, "float32", SETTINGS)) == {"end_token_ids": [primary, second]}


# ---------------------------------------------------------------- settings greedy generate honours

def test_repetition_penalty_and_ngram_ban_as_the_models_own_generate(base, pixels, tmp_path):
    generation = {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2}
    loaded = load_model(save_model_folder(base, tmp_path / "m", **generation))
    ours = ours_at(loaded, pixels, loaded.layer_numbering().normal_layer, SETTINGS)
    assert ours.token_ids == own_generate(loaded, pixels, SETTINGS)
    assert ours.token_ids != plain_captions(base, pixels), "the settings should change the captions"
    for ids in ours.token_ids:
        bigrams = list(zip(ids[:-1], ids[1:-1]))   # the forced end token may repeat one
        assert len(bigrams) == len(set(bigrams)), ids
    decoder = make_decoder(loaded, "float32", SETTINGS)
    assert decoder.generation_settings() == generation


def test_suppressed_banned_and_forced_tokens_as_the_models_own_generate(base, pixels, tmp_path):
    plain = plain_captions(base, pixels)
    counts = Counter(t for ids in plain for t in ids[:-1]).most_common()
    (a, _), (b, _), (c, _) = counts[:3]
    first = Counter(ids[0] for ids in plain).most_common(1)[0][0]
    forced = next(t for t, _ in counts if t not in (a, b, c, first))
    generation = {"suppress_tokens": [a], "begin_suppress_tokens": [first], "bad_words_ids": [[b], [c, c]],
                  "forced_bos_token_id": forced, "sequence_bias": [[[c], 3.0]]}
    loaded = load_model(save_model_folder(base, tmp_path / "m", **generation))
    ours = ours_at(loaded, pixels, loaded.layer_numbering().normal_layer, SETTINGS)
    assert ours.token_ids == own_generate(loaded, pixels, SETTINGS)
    assert ours.token_ids != plain
    assert not any(a in ids or b in ids for ids in ours.token_ids)
    if loaded.family != LLAVA:  # generate forces the first token only where its input is the start token alone
        assert all(ids[0] == forced for ids in ours.token_ids)
    assert_same_as_reference_with_rules(loaded, pixels)
    assert make_decoder(loaded, "float32", SETTINGS).generation_settings() == generation


def assert_same_as_reference_with_rules(loaded, pixels):
    """The reference loop knows no generation settings: our loop without them must still be it (the rules
    are the only change), so compare with the rules switched off on a fresh decoder."""
    decoder = make_decoder(loaded, "float32", SETTINGS)
    assert decoder.logits_rules is not None
    decoder.logits_rules = None
    inputs = every_layer_inputs(loaded, pixels)
    ours = decoder.generate(inputs)
    assert ours.token_ids == [r.token_ids for r in reference_rows(loaded, inputs, SETTINGS)]


def test_a_setting_we_cannot_apply_refuses_the_model_naming_it(base, tmp_path):
    loaded = load_model(save_model_folder(base, tmp_path / "m", encoder_no_repeat_ngram_size=3))
    with pytest.raises(ValueError, match=r"encoder_no_repeat_ngram_size=3.*generation_config\.json"):
        make_decoder(loaded, "float32", SETTINGS)


def test_applied_settings_are_in_the_captions_provenance_and_identity(tmp_path):
    """The caption step's bookkeeping, on one family."""
    base = load_model("tiny-random-vit-gpt2")
    jpeg_shard(str(tmp_path / "s-000000.tar"), 2)
    folder = save_model_folder(base, tmp_path / "m", repetition_penalty=1.3)
    features, captions = str(tmp_path / "f"), str(tmp_path / "c")
    run_extract([str(tmp_path / "s-000000.tar")], features, ExtractSettings(model=folder, device="cpu", layers="0"))
    run_caption(features, captions, CaptionSettings(device="cpu", seq_len=10))
    meta = table_metadata(read_table(f"{captions}/s-000000/captions.parquet", CAPTIONS_SCHEMA))
    assert meta["parameters"]["generation_settings"] == {"repetition_penalty": 1.3}
    # the same folder with another setting: its old captions are not taken as done
    save_model_folder(base, folder, repetition_penalty=1.5)
    with pytest.raises(ValueError, match="another --out"):
        run_caption(features, captions, CaptionSettings(device="cpu", seq_len=10))


# ---------------------------------------------------------------- VisionEncoderDecoder's start token

def test_vision_encoder_decoder_starts_from_the_generation_configs_start_token(tmp_path):
    base = load_model("tiny-random-vit-gpt2")
    from PIL import Image

    pixels = torch.stack([base.preprocess(Image.open(p).convert("RGB")) for p in skimage_photo_paths()[:4]])
    start = 5
    assert base.model.config.decoder_start_token_id != start
    loaded = load_model(save_model_folder(base, tmp_path / "m", decoder_start_token_id=start))
    assert loaded.model.config.decoder_start_token_id != start   # the model config still says the other one
    assert loaded.start_token_id == start
    ours = ours_at(loaded, pixels, loaded.layer_numbering().normal_layer, SETTINGS)
    assert ours.token_ids == own_generate(loaded, pixels, SETTINGS)
    assert ours.token_ids != plain_captions(base, pixels)
