"""The cached decoder against the plain reference loop (whole prefix recomputed every step
through open_clip's own forward), on real model code with random weights."""

from __future__ import annotations

import pytest
import torch

from latent_verbalizer.components.caption.coca_decoder import CachedCocaDecoder, GreedySettings, caption_text
from latent_verbalizer.components.common.model_families.coca_loading import (
    EOS_TOKEN_ID,
    PAD_TOKEN_ID,
    load_coca,
    vision_block_outputs,
)
from tests.coca_decoding_checks import assert_same_as_reference, photo_pixels, steered


@pytest.fixture(scope="module")
def tiny():
    return load_coca("tiny-random-coca")


@pytest.fixture(scope="module")
def tiny_layer_embs(tiny):
    """Decoder image embeddings of 5 photos at every layer: [layers * 5, 255, 64]."""
    pixels = photo_pixels(tiny, 5)
    dec = CachedCocaDecoder(tiny.model)
    blocks = vision_block_outputs(tiny.model.visual, pixels, list(range(tiny.n_layers)))
    return torch.cat([dec.image_embeddings(b) for b in blocks])


def test_every_layer_of_tiny_model_matches_reference_loop(tiny, tiny_layer_embs):
    ours = assert_same_as_reference(tiny.model, tiny_layer_embs)
    assert len({tuple(t) for t in ours.token_ids}) > 10, "captions should differ across images and layers"


def test_eos_is_suppressed_until_min_seq_len(tiny, tiny_layer_embs):
    # EOS everywhere the most likely token: it must wait until the sequence is 5 long
    model = steered(tiny.model, eos_boost=1e3)
    ours = assert_same_as_reference(model, tiny_layer_embs[:6])
    assert all(len(t) == 5 and t[-1] == EOS_TOKEN_ID for t in ours.token_ids)
    assert set(ours.stop) == {"eos"}
    ours3 = assert_same_as_reference(model, tiny_layer_embs[:3], GreedySettings(seq_len=12, min_seq_len=3))
    assert all(len(t) == 3 for t in ours3.token_ids)


def test_token_zero_ends_a_caption(tiny, tiny_layer_embs):
    ours = assert_same_as_reference(steered(tiny.model, pad_boost=1e3), tiny_layer_embs[:4])
    assert ours.token_ids == [[PAD_TOKEN_ID]] * 4 and set(ours.stop) == {"pad"}
    assert caption_text(tiny.tokenizer, ours.token_ids[0]) == ""


def test_forced_eos_at_seq_len(tiny, tiny_layer_embs):
    ours = assert_same_as_reference(tiny.model, tiny_layer_embs[:4], GreedySettings(seq_len=9, min_seq_len=5))
    for ids, stop in zip(ours.token_ids, ours.stop):
        assert len(ids) == 8 and ids[-1] == EOS_TOKEN_ID and stop == "length"


def test_rows_finishing_at_different_steps(tiny, tiny_layer_embs):
    plain = CachedCocaDecoder(tiny.model).generate(tiny_layer_embs)
    # make EOS win wherever a token that the rows produce mid-caption would: rows end at different steps
    counts = {}
    for ids in plain.token_ids:
        for t in set(ids[4:-1]):
            counts[t] = counts.get(t, 0) + 1
    token = sorted(counts, key=lambda t: abs(counts[t] - len(plain.token_ids) / 2))[0]
    ours = assert_same_as_reference(steered(tiny.model, eos_like_token=token), tiny_layer_embs, GreedySettings(seq_len=20))
    lengths = {len(t) for t in ours.token_ids}
    assert len(lengths) >= 3, lengths
    assert "eos" in ours.stop and "length" in ours.stop


def test_one_row_alone_equals_the_row_in_a_batch(tiny, tiny_layer_embs):
    model = steered(tiny.model, eos_like_token=CachedCocaDecoder(tiny.model).generate(tiny_layer_embs[:1]).token_ids[0][6])
    dec = CachedCocaDecoder(model)
    batch = dec.generate(tiny_layer_embs)
    for i in (0, 7, len(tiny_layer_embs) - 1):
        alone = dec.generate(tiny_layer_embs[i:i + 1])
        assert alone.token_ids[0] == batch.token_ids[i]
        assert alone.entropy_bits[0] == pytest.approx(batch.entropy_bits[i], abs=1e-5)


def test_last_layer_equals_models_own_image_tokens(tiny):
    pixels = photo_pixels(tiny, 3)
    dec = CachedCocaDecoder(tiny.model)
    last = vision_block_outputs(tiny.model.visual, pixels, [tiny.n_layers - 1])[0]
    with torch.no_grad():
        _, own_tokens = tiny.model._encode_image(pixels)
    torch.testing.assert_close(dec.image_embeddings(last), own_tokens, atol=1e-5, rtol=1e-5)
    assert dec.generate(dec.image_embeddings(last)).token_ids == dec.generate(own_tokens).token_ids


def test_bf16_runs_and_mostly_agrees(tiny, tiny_layer_embs):
    fp32 = CachedCocaDecoder(tiny.model, "float32").generate(tiny_layer_embs[:6])
    bf16 = CachedCocaDecoder(tiny.model, "bfloat16").generate(tiny_layer_embs[:6])
    assert all(len(t) >= 1 for t in bf16.token_ids)
    first = sum(a[0] == b[0] for a, b in zip(fp32.token_ids, bf16.token_ids))
    assert first >= 4  # near-uniform random weights: ties can flip, most first tokens agree


def test_bad_settings_are_refused(tiny):
    with pytest.raises(ValueError, match="must be larger"):
        GreedySettings(seq_len=5, min_seq_len=5)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        CachedCocaDecoder(tiny.model, settings=GreedySettings(seq_len=500))
    with pytest.raises(ValueError, match="use one of float32, bfloat16"):
        CachedCocaDecoder(tiny.model, precision="fp8")


def test_full_size_coca_vit_l14_matches_reference_loop():
    """Random full-size coca_ViT-L-14 (the study's architecture), a few (image, layer) pairs
    (seq_len 12 keeps the reference loop's CPU time down; the loop is the same)."""
    big = load_coca("coca_ViT-L-14", "random")
    assert big.n_layers == 24
    pixels = photo_pixels(big, 2)
    dec = CachedCocaDecoder(big.model)
    blocks = vision_block_outputs(big.model.visual, pixels, [0, 23])
    assert blocks[0].shape == (2, 257, 1024)
    embs = torch.cat([dec.image_embeddings(b) for b in blocks])
    assert embs.shape == (4, 255, 768)
    short = GreedySettings(seq_len=12)
    assert_same_as_reference(big.model, embs, short)
    with torch.no_grad():
        _, own = big.model._encode_image(pixels)
    dec = CachedCocaDecoder(big.model, settings=short)
    assert dec.generate(own).token_ids == dec.generate(embs[2:]).token_ids


def test_results_leave_the_device_once_per_batch_not_once_per_row(tiny, tiny_layer_embs, monkeypatch):
    """On a GPU each ``.tolist()`` waits for the device: the decoder copies its results to the
    host with a fixed number of copies per batch, however many rows it holds."""
    calls = []
    real_tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: calls.append(self.shape) or real_tolist(self))
    decoder = CachedCocaDecoder(tiny.model)
    counts = []
    for rows in (2, 12):
        calls.clear()
        decoder.generate(tiny_layer_embs[:rows])
        counts.append(len(calls))
    assert counts[0] == counts[1] <= 5, counts
