"""Grounding maps (issue #21) equal a plain autograd reference, per family, in float32.

The reference is written here from the definition, with the model's own modules and forwards
(not the caption step's cached decoder or its copies): one caption at a time, no cache, the
whole sequence through the model, ``L`` = the summed log-probabilities of the caption's tokens,
``s_p = |sum_c X[p, c] dL/dX[p, c]|`` over the patch tokens, normalised. The maps under test
come from ``caption.grounding``: many captions of several images and layers (of different
lengths, so padded) in one backward pass through the decoding path captioning uses.
"""

from __future__ import annotations

import pytest
import torch

from latent_verbalizer.components.caption.decoders import make_decoder
from latent_verbalizer.components.caption.grounding import Grounder
from latent_verbalizer.components.common.model_families import BLIP, COCA, LLAVA, load_model
from latent_verbalizer.components.common.models import SOT_TOKEN_ID
from tests.images import skimage_photo_paths

FAMILIES = ("tiny-random", "tiny-random-blip", "tiny-random-vit-gpt2", "tiny-random-llava")
N_PHOTOS = 2
TOLERANCE = 1e-4


@pytest.fixture(scope="module", params=FAMILIES)
def loaded(request):
    return load_model(request.param)


@pytest.fixture(scope="module")
def blocks(loaded):
    """Every layer's block outputs of a few photos: ``{layer: [photos, tokens, width]}``."""
    from PIL import Image

    pixels = torch.stack([loaded.preprocess(Image.open(p).convert("RGB")) for p in skimage_photo_paths()[:N_PHOTOS]])
    layers = list(range(loaded.n_layers))
    return dict(zip(layers, loaded.vision_block_outputs(pixels, layers)))


def reference_logits(loaded, x: torch.Tensor, layer_output: torch.Tensor, caption_input: list[int]) -> torch.Tensor:
    """Logits ``[T, vocab]`` after each of ``caption_input`` for one image whose ``X_k`` is ``x``
    ``[1, tokens, width]``: the model's own modules and forwards, no cache."""
    model = loaded.model
    if loaded.family == COCA:
        pool = model.visual.attn_pool
        hook = pool.ln_k.register_forward_hook(lambda module, args, output: x)  # the pooler's own forward, from X on
        try:
            image_embs = model.visual.ln_post(pool(layer_output))[:, 1:]
        finally:
            hook.remove()
        text = torch.tensor([caption_input])
        latent = torch.zeros(1, 1)
        return model(None, text, image_latent=latent, image_embs=image_embs, output_labels=False)["logits"][0]
    ids = torch.tensor([caption_input])
    if loaded.family == BLIP:
        return model.text_decoder(input_ids=ids, encoder_hidden_states=x, use_cache=False).logits[0]
    if loaded.family == LLAVA:
        from latent_verbalizer.components.caption.hf_decoders import PromptDecoder

        prompt = PromptDecoder(loaded).prompt_ids  # the processor's prompt, image placeholder expanded
        features = model.model.multi_modal_projector(x[:, 1:])  # the "default" strategy drops CLS
        full = torch.tensor([prompt[:-1] + caption_input])
        embeds = model.get_input_embeddings()(full)
        mask = (full == model.config.image_token_id)[..., None].expand_as(embeds)
        embeds = embeds.masked_scatter(mask, features.reshape(-1))
        return model(inputs_embeds=embeds, use_cache=False).logits[0, len(prompt) - 1:]
    # VisionEncoderDecoder: the model's own forward from the encoder's (normalised) output on
    return model(encoder_outputs=(x,), decoder_input_ids=ids, use_cache=False).logits[0]


def normalised_tokens(loaded, layer_output: torch.Tensor) -> torch.Tensor:
    """``X_k`` as the definition names it, from the model's own modules."""
    model = loaded.model
    if loaded.family == COCA:
        return model.visual.attn_pool.ln_k(layer_output)
    if loaded.family == BLIP:
        return model.vision_model.post_layernorm(layer_output)
    if loaded.family == LLAVA:
        return layer_output
    return model.encoder.layernorm(layer_output)


def reference_map(loaded, start_id: int, layer_output: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    x = normalised_tokens(loaded, layer_output).detach().requires_grad_(True)
    logits = reference_logits(loaded, x, layer_output, [start_id] + token_ids[:-1])
    loss = torch.log_softmax(logits.float(), -1)[torch.arange(len(token_ids)), torch.tensor(token_ids)].sum()
    (grad,) = torch.autograd.grad(loss, x)
    rows, cols = loaded.decoder_handoff().grid
    scores = (x * grad).sum(-1).abs()[0, -rows * cols:]
    return (scores / scores.sum()).detach()


def test_maps_equal_the_plain_reference(loaded, blocks):
    decoder = make_decoder(loaded)
    grounder = Grounder(decoder, batch_size=64)
    layers = sorted(blocks)
    x = torch.cat([grounder.normalised_tokens(blocks[k]) for k in layers])
    origin = [(k, i) for k in layers for i in range(N_PHOTOS)]
    decoded = decoder.generate(grounder.decoder_inputs(x))
    # captions of different lengths in one batch (a map is defined for any token sequence)
    token_ids = [ids if j % 3 else ids[:1 + j % 7] for j, ids in enumerate(decoded.token_ids)]
    assert len({len(ids) for ids in token_ids}) > 2
    maps = grounder.maps(x, token_ids)

    rows, cols = grounder.grid
    assert maps.shape == (len(origin), rows * cols) and grounder.grid == loaded.decoder_handoff().grid
    assert torch.allclose(maps.sum(-1), torch.ones(len(origin)), atol=1e-5)
    start = decoder.settings.sot_token_id
    assert start == SOT_TOKEN_ID or loaded.family != COCA
    worst = 0.0
    for j, (k, i) in enumerate(origin):
        expected = reference_map(loaded, start, blocks[k][i:i + 1], token_ids[j])
        worst = max(worst, float((maps[j] - expected).abs().max()))
    assert worst <= TOLERANCE, f"{loaded.name}: largest difference from the reference {worst:.2e}"
    assert float(maps.std(-1).min()) > 0  # the maps are not uniform: the caption depends on where it looks


def test_handoff_halves_make_the_decoder_input(loaded, blocks):
    """``rest(normalise(H))`` is exactly what captioning decodes from (``image_embeddings``), and the
    grid's patches are the last tokens of every block output."""
    decoder = make_decoder(loaded)
    handoff = decoder.handoff()
    with torch.no_grad():
        for k, h in blocks.items():
            assert torch.equal(handoff.rest(handoff.normalise(h)).to(decoder.dtype), decoder.image_embeddings(h))
    rows, cols = handoff.grid
    assert blocks[0].shape[1] == rows * cols + 1  # every tiny encoder here has one CLS token, first
