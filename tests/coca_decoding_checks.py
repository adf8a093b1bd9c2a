"""Checks of the cached CoCa decoder against the plain reference loop (tests/reference_loop.py),
shared by the CPU tests and the GPU tests of the caption step."""

from __future__ import annotations

import copy

import pytest
import torch

from latent_verbalizer.components.caption.coca_decoder import CachedCocaDecoder, GreedySettings
from latent_verbalizer.components.common.model_families.coca_loading import EOS_TOKEN_ID, PAD_TOKEN_ID
from tests.images import skimage_photo_paths
from tests.reference_loop import reference_greedy


def photo_pixels(loaded, n):
    """The first ``n`` test photos through the model's own transform: ``[n, 3, H, W]``."""
    from PIL import Image

    return torch.stack([loaded.preprocess(Image.open(p).convert("RGB")) for p in skimage_photo_paths()[:n]])


def assert_same_as_reference(model, embs, settings=GreedySettings()):
    """Our cached decoder's captions equal the reference loop's (tokens, entropy, log-prob); returns ours."""
    ours = CachedCocaDecoder(model, "float32", settings).generate(embs)
    ref = reference_greedy(model, embs, seq_len=settings.seq_len, min_seq_len=settings.min_seq_len)
    for i, (ids, ent, lp) in enumerate(ref):
        assert ours.token_ids[i] == ids, f"row {i}"
        assert ours.entropy_bits[i] == pytest.approx(ent, abs=1e-4)
        assert ours.mean_logprob[i] == pytest.approx(lp, abs=1e-4)
    return ours


def steered(model, eos_like_token=None, eos_boost=None, pad_boost=None):
    """A copy whose decoder makes EOS / pad (token 0) more likely.

    For constant boosts, one feature of the final layer norm is made constant (weight 0,
    bias 1) and its projection row carries the boost, so it adds to those tokens' logits only.
    """
    m = copy.deepcopy(model)
    with torch.no_grad():
        proj = m.text_decoder.text_projection
        if eos_like_token is not None:
            proj[:, EOS_TOKEN_ID] = proj[:, eos_like_token] * 1.05
        if eos_boost is not None or pad_boost is not None:
            ln = m.text_decoder.ln_final
            ln.weight[0], ln.bias[0] = 0.0, 1.0
            proj[0, :] = 0.0
            proj[0, EOS_TOKEN_ID] = eos_boost or 0.0
            proj[0, PAD_TOKEN_ID] = pad_boost or 0.0
    return m
