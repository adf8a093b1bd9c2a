"""BLEU / CIDEr-D / token F1: pinned to the numbers of the MSCOCO caption evaluation code."""

from __future__ import annotations

import json

import pytest

from latent_verbalizer.components.report.metrics.text_metrics import (
    cider_d,
    corpus_bleu,
    first_stable_index,
    token_f1,
    tokenize,
)

# pycocoevalcap 1.2 (Bleu(4), Cider()) on the first 200 reference images: candidates = the
# captions of layer L, references = the captions of layers 21, 22 and 23, tokenised by
# ``tokenize`` and joined with spaces (the coco code then splits on spaces).
PINNED = {
    10: ([0.1080508474575985, 0.03298120994300208, 0.010881464919063256, 7.979525216121948e-07], 0.006868860555145825),
    16: ([0.4144800777451825, 0.22601991991857198, 0.1063141745126382, 0.05067298572649146], 0.10155232711521142),
    20: ([0.6874634793662534, 0.5751896555195732, 0.49860595335713565, 0.4400232741504873], 1.6403137918256383),
}


@pytest.mark.parametrize("layer", sorted(PINNED))
def test_bleu_and_cider_match_coco_caption(reference_dir, layer):
    caps = json.loads((reference_dir / "caps_batch0.json").read_text())
    cands = [tokenize(c) for c in caps[f"layer_{layer}"][:200]]
    refs = [[tokenize(caps[f"layer_{k}"][i]) for k in (21, 22, 23)] for i in range(200)]
    bleu = corpus_bleu(cands, refs)
    cider, per_item = cider_d(cands, refs)
    want_bleu, want_cider = PINNED[layer]
    assert bleu == pytest.approx(want_bleu, rel=1e-9, abs=1e-15)
    assert cider == pytest.approx(want_cider, rel=1e-9)
    assert len(per_item) == 200


def test_identical_captions_score_full_marks():
    toks = tokenize("A man riding a motorcycle on a dirt path.")
    assert toks == ["a", "man", "riding", "a", "motorcycle", "on", "a", "dirt", "path"]
    assert token_f1(toks, toks) == 1.0
    assert corpus_bleu([toks], [[toks]])[3] == pytest.approx(1.0)
    assert token_f1(["a", "dog"], ["a", "cat"]) == pytest.approx(0.5)
    assert token_f1([], []) == 1.0 and token_f1(["x"], []) == 0.0
    assert corpus_bleu([], []) == [0.0] * 4


def test_first_stable_index():
    assert first_stable_index([0.1, 0.9, 0.2, 0.6, 0.7, 1.0], 0.5) == 3
    assert first_stable_index([0.9, 0.9], 0.5) == 0
    assert first_stable_index([0.9, 0.1], 0.5) is None
