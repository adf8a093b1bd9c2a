"""Exactness of the Hugging Face families' captions, per family, on tiny random models of the
real classes (BLIP, ViT + GPT-2 VisionEncoderDecoder, LLaVA) and real photos, offline:

- at the layer the model normally captions from, our tokens equal the model's own ``generate``;
- at every layer, tokens, entropy and mean log-prob equal the plain reference loop
  (``hf_reference_loop.py``: the whole prefix recomputed every step, no cache);
- the end-token rules (banned below ``min_seq_len``, rows ending at different steps, the
  cache compacted) hold on a copy of each model steered to end early;
- bf16 decodes; and the vision side hands the decoder what the model itself would.
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch

from latent_verbalizer.components.caption.decoder_factory import make_decoder
from latent_verbalizer.components.caption.greedy import GreedySettings
from latent_verbalizer.components.caption.hf_decoders import HFDecodeState
from latent_verbalizer.components.common.model_families import LLAVA, load_model
from tests.hf_decoding_checks import (
    assert_same_as_reference,
    llava_prompt_ids,
    models_own_end_token,
    ours_at,
    own_generate,
)
from tests.images import skimage_photo_paths

FAMILIES = ("tiny-random-blip", "tiny-random-vit-gpt2", "tiny-random-llava")
N_PHOTOS = 3


@pytest.fixture(scope="module", params=FAMILIES)
def loaded(request):
    return load_model(request.param)


@pytest.fixture(scope="module")
def pixels(loaded):
    from PIL import Image

    return torch.stack([loaded.preprocess(Image.open(p).convert("RGB")) for p in skimage_photo_paths()[:N_PHOTOS]])


@pytest.fixture(scope="module")
def every_layer(loaded, pixels):
    """Decoder inputs of the photos at every layer, rows shuffled so one batch mixes images and
    layers: (inputs ``[layers * photos, ...]``, the (layer, photo) of each row)."""
    layers = list(range(loaded.n_layers))
    blocks = loaded.vision_block_outputs(pixels, layers)
    with torch.no_grad():
        inputs = torch.cat([loaded.decoder_inputs(b) for b in blocks])
    origin = [(k, i) for k in layers for i in range(len(pixels))]
    order = torch.randperm(len(origin), generator=torch.Generator().manual_seed(0))
    return inputs[order], [origin[j] for j in order.tolist()]


# ---------------------------------------------------------------- 1. the model's own generate

def test_normal_layer_equals_models_own_generate(loaded, pixels):
    settings = GreedySettings()
    normal = loaded.layer_numbering().normal_layer
    ours = ours_at(loaded, pixels, normal, settings)
    assert ours.token_ids == own_generate(loaded, pixels, settings)
    assert loaded.eos_token_id == models_own_end_token(loaded)
    assert len({tuple(t) for t in ours.token_ids}) > 1, "captions should differ across photos"


def test_llava_decodes_after_the_processors_own_prompt():
    loaded = load_model("tiny-random-llava")
    decoder = make_decoder(loaded)
    prompt = llava_prompt_ids(loaded)
    assert decoder.prompt_ids == prompt
    assert decoder.settings.sot_token_id == prompt[-1]
    n_image_tokens = prompt.count(loaded.model.config.image_token_id)
    assert n_image_tokens == loaded.feature_shape()[0] - 1   # the CLS token dropped ("default" strategy)


# ---------------------------------------------------------------- 2. every layer: the reference loop

def test_every_layer_matches_reference_loop(loaded, every_layer):
    inputs, origin = every_layer
    ours = assert_same_as_reference(loaded, inputs)
    captions = {o: tuple(t) for o, t in zip(origin, ours.token_ids)}
    assert len(set(captions.values())) >= 2 * len(captions) // 3, "captions should differ across images and layers"
    layers = range(loaded.n_layers)
    assert len({captions[k, 0] for k in layers}) > 1, "one photo's captions should differ across layers"
    assert len({captions[0, i] for i in range(N_PHOTOS)}) > 1, "one layer's captions should differ across photos"


def test_forced_end_token_at_seq_len(loaded, every_layer):
    settings = GreedySettings(seq_len=9, min_seq_len=5)
    ours = assert_same_as_reference(loaded, every_layer[0][:4], settings)
    for ids, stop in zip(ours.token_ids, ours.stop):
        assert ids[-1] == loaded.eos_token_id and len(ids) <= 8
        assert stop == "eos" or len(ids) == 8


# ---------------------------------------------------------------- 3. end-token rules on steered copies

def steered(loaded, eos_boost: float | None = None, eos_like_token: int | None = None):
    """A copy of the model whose output layer makes the end token likely: ``eos_boost`` adds a
    constant to its logit (a bias); ``eos_like_token`` makes its row 1.05x another token's, so
    it wins wherever that token would. The output layer is untied from the input embeddings
    first (the end token may also be the start token)."""
    twin = copy.copy(loaded)
    twin.model = copy.deepcopy(loaded.model)
    head = twin.model.get_output_embeddings() if loaded.family == LLAVA else twin.text_decoder().get_output_embeddings()
    head.weight = torch.nn.Parameter(head.weight.detach().clone(), requires_grad=False)
    bias = torch.zeros(head.out_features) if head.bias is None else head.bias.detach().clone()
    eos = loaded.eos_token_id
    with torch.no_grad():
        if eos_like_token is not None:
            head.weight[eos] = head.weight[eos_like_token] * 1.05
            bias[eos] = bias[eos_like_token] * 1.05
        if eos_boost is not None:
            bias[eos] += eos_boost
    head.bias = torch.nn.Parameter(bias, requires_grad=False)
    return twin


def test_end_token_is_banned_below_min_seq_len(loaded, every_layer):
    inputs = every_layer[0][:6]
    eager = steered(loaded, eos_boost=1e3)
    for settings in (GreedySettings(), GreedySettings(seq_len=12, min_seq_len=3)):
        ours = assert_same_as_reference(eager, inputs, settings)
        assert set(ours.stop) == {"eos"}
        # the end token is allowed once the sequence (start token included) is min_seq_len long
        assert all(len(t) == settings.min_seq_len and t[-1] == eager.eos_token_id for t in ours.token_ids)


def test_rows_ending_at_different_steps_compact_the_cache(loaded, every_layer, pixels, monkeypatch):
    inputs, _ = every_layer
    settings = GreedySettings(seq_len=20)
    plain = make_decoder(loaded, "float32", settings).generate(inputs)
    # the end token wins wherever a token the rows produce mid-caption would: rows end at different steps
    counts = {}
    for ids in plain.token_ids:
        for t in set(ids[settings.min_seq_len:-1]) - {loaded.eos_token_id}:
            counts[t] = counts.get(t, 0) + 1
    token = min(counts, key=lambda t: (abs(counts[t] - len(plain.token_ids) / 2), t))
    eager = steered(loaded, eos_like_token=token)

    kept = []
    real_keep_rows = HFDecodeState.keep_rows
    monkeypatch.setattr(HFDecodeState, "keep_rows", lambda self, rows: kept.append(len(rows)) or real_keep_rows(self, rows))
    # compact as soon as any row ends (the default waits for half of them), so every step after the first end is checked
    ours = assert_same_as_reference(eager, inputs, settings, compact_below=1.0)
    lengths = {len(t) for t in ours.token_ids}
    assert len(lengths) >= 2, lengths
    assert "eos" in ours.stop and "length" in ours.stop, ours.stop
    assert all(len(t) >= settings.min_seq_len for t in ours.token_ids)
    assert kept and kept[-1] < len(inputs), "finished rows should have been dropped from the cache"
    # the model's own generate ends the same rows at the same steps (normal layer)
    normal = eager.layer_numbering().normal_layer
    assert ours_at(eager, pixels, normal, settings).token_ids == own_generate(eager, pixels, settings)


# ---------------------------------------------------------------- 4. bf16

def test_bf16_decodes_captions_of_the_right_shape(loaded, pixels):
    twin = copy.copy(loaded)
    twin.model = copy.deepcopy(loaded.model)        # the decoder casts its modules in place
    settings = GreedySettings(seq_len=12)
    decoder = make_decoder(twin, "bfloat16", settings)
    blocks = twin.vision_block_outputs(pixels, [0, twin.n_layers - 1])
    inputs = torch.cat([decoder.image_embeddings(b) for b in blocks])
    assert inputs.dtype == torch.bfloat16
    out = decoder.generate(inputs)
    assert len(out.token_ids) == len(out.stop) == len(out.entropy_bits) == 2 * len(pixels)
    for ids, stop, entropy, logprob in zip(out.token_ids, out.stop, out.entropy_bits, out.mean_logprob):
        assert 1 <= len(ids) <= settings.seq_len - 1 and ids[-1] == twin.eos_token_id
        assert stop in ("eos", "length") and (stop == "eos" or len(ids) == settings.seq_len - 1)
        assert 0 < entropy < 20 and logprob < 0
    assert next(twin.vision_tower().parameters()).dtype == torch.float32   # the vision tower is left as it is


# ---------------------------------------------------------------- 5. the vision side

def test_block_outputs_are_the_models_own_hidden_states(loaded, pixels):
    with torch.no_grad():
        if loaded.family == LLAVA:
            hidden = loaded.model.model.vision_tower(pixel_values=pixels, output_hidden_states=True).hidden_states
        elif loaded.family == "hf-blip":
            hidden = loaded.model.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states
        else:
            hidden = loaded.model.encoder(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert len(hidden) == loaded.n_layers + 1
    for k in range(loaded.n_layers):
        torch.testing.assert_close(loaded.vision_block_outputs(pixels, [k])[0], hidden[k + 1], rtol=0, atol=0)
    assert loaded.vision_block_outputs(pixels, [0])[0].shape[1:] == loaded.feature_shape()


def test_normal_layer_feeds_the_decoder_what_the_model_does(loaded, pixels):
    model = loaded.model
    normal = loaded.layer_numbering().normal_layer
    ours = loaded.decoder_inputs(loaded.vision_block_outputs(pixels, [normal])[0])
    with torch.no_grad():
        if loaded.family == LLAVA:
            own = torch.stack(model.get_image_features(
                pixel_values=pixels, vision_feature_layer=model.config.vision_feature_layer,
                vision_feature_select_strategy=model.config.vision_feature_select_strategy).pooler_output)
        elif loaded.family == "hf-blip":
            own = model.vision_model(pixel_values=pixels).last_hidden_state
        else:
            own = model.enc_to_dec_proj(model.encoder(pixel_values=pixels).last_hidden_state)
    torch.testing.assert_close(ours, own, rtol=1e-5, atol=1e-5)


def test_llava_every_layer_is_its_own_vision_feature_layer():
    """Captioning block k is the model's own image features at ``vision_feature_layer = k + 1``."""
    loaded = load_model("tiny-random-llava")
    model = loaded.model
    from PIL import Image

    pixels = torch.stack([loaded.preprocess(Image.open(p).convert("RGB")) for p in skimage_photo_paths()[:2]])
    blocks = loaded.vision_block_outputs(pixels, list(range(loaded.n_layers)))
    for k, block in enumerate(blocks):
        with torch.no_grad():
            own = torch.stack(model.get_image_features(pixel_values=pixels, vision_feature_layer=k + 1,
                                                       vision_feature_select_strategy="default").pooler_output)
        torch.testing.assert_close(loaded.decoder_inputs(block), own, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- 6. the cache argument's name

def named_past_key_values(loaded):
    """A copy whose decoding forward takes its KV cache as ``past_key_values``, the name
    transformers used before 5.24, and swallows unknown keywords as those releases' ``**kwargs``
    did: a cache handed over as ``cache=`` is lost without an error. The model code is the real one
    (under a transformers before 5.24, where the name is already ``past_key_values``, it is unchanged)."""
    twin = copy.copy(loaded)
    twin.model = copy.deepcopy(loaded.model)
    module = twin.model if loaded.family == LLAVA else twin.text_decoder()
    real = type(module)
    own = "cache" if "cache" in inspect.signature(real.forward).parameters else "past_key_values"   # the real name

    class PastKeyValuesNamed(real):
        def forward(self, *args, past_key_values=None, **kwargs):
            kwargs.pop("cache", None)
            return real.forward(self, *args, **{own: past_key_values}, **kwargs)

    module.__class__ = PastKeyValuesNamed
    return twin


def test_cache_reaches_a_forward_that_names_it_past_key_values(loaded, every_layer):
    """Under the older name the decoder still hands the cache over (else every step would decode
    one token with no past, and the captions would differ from the reference loop's)."""
    old_style = named_past_key_values(loaded)
    assert_same_as_reference(old_style, every_layer[0][:6])
