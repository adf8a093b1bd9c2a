"""Caption on a GPU (``pytest -m gpu``): the fp32 exact path token for token against the plain
reference loop on CUDA (random full-size coca_ViT-L-14, all 24 layers, rows ending at
different steps), bf16's agreement with fp32, and a real out-of-memory."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from latent_verbalizer.components.caption.caption import CAPTIONS_NAME, CaptionSettings, run_caption
from latent_verbalizer.components.caption.coca_decoder import CachedCocaDecoder, GreedySettings
from latent_verbalizer.components.common.contracts import CAPTIONS_SCHEMA
from latent_verbalizer.components.common.model_families.coca_loading import vision_block_outputs
from latent_verbalizer.components.common.precision import exact_float32_math, float32_math
from latent_verbalizer.components.common.tables import read_table
from latent_verbalizer.components.extract.extract import ExtractSettings, extract_shard
from tests.coca_decoding_checks import assert_same_as_reference, photo_pixels, steered
from tests.gpu import GPU_ONLY, capped_gpu_memory, full_size_coca_on_cuda, peak_extra_bytes, report
from tests.images import jpeg_shard

pytestmark = GPU_ONLY


@pytest.fixture(scope="module")
def big():
    return full_size_coca_on_cuda()


@pytest.fixture(scope="module")
def all_layer_embs(big):
    """Decoder image embeddings of 2 photos at all 24 layers: [48, 255, 768] on the GPU."""
    exact_float32_math()
    pixels = photo_pixels(big, 2).cuda()
    decoder = CachedCocaDecoder(big.model)
    blocks = vision_block_outputs(big.model.visual, pixels, list(range(big.n_layers)))
    return torch.cat([decoder.image_embeddings(b) for b in blocks])


def test_fp32_on_cuda_equals_the_reference_loop(big, all_layer_embs):
    """With TF32 off; EOS steered to win where a mid-caption token would, so rows end at
    different steps and the batch shrinks (cache compaction) on the way."""
    assert float32_math()["tf32"] is False
    plain = CachedCocaDecoder(big.model).generate(all_layer_embs)
    counts = {}
    for ids in plain.token_ids:
        for t in set(ids[4:-1]):
            counts[t] = counts.get(t, 0) + 1
    token = sorted(counts, key=lambda t: abs(counts[t] - len(plain.token_ids) / 2))[0]
    model = steered(big.model, eos_like_token=token)
    ours = assert_same_as_reference(model, all_layer_embs, GreedySettings())
    lengths = sorted({len(t) for t in ours.token_ids})
    assert len(lengths) >= 3 and "eos" in ours.stop and "length" in ours.stop, (lengths, set(ours.stop))
    report("caption: fp32 on CUDA vs the reference loop on CUDA",
           [f"{len(ours.token_ids)} rows (2 photos x 24 layers), token-for-token equal; caption lengths {lengths}"])


def test_bf16_agreement_with_fp32_is_reported(big, all_layer_embs):
    fp32 = CachedCocaDecoder(big.model, "float32").generate(all_layer_embs)
    bf16 = CachedCocaDecoder(big.model, "bfloat16").generate(all_layer_embs)
    assert len(bf16.token_ids) == len(fp32.token_ids) == all_layer_embs.shape[0]
    assert all(1 <= len(t) <= 29 for t in bf16.token_ids) and set(bf16.stop) <= {"eos", "pad", "length"}
    same_caption = sum(a == b for a, b in zip(fp32.token_ids, bf16.token_ids)) / len(fp32.token_ids)
    pairs = [(x, y) for a, b in zip(fp32.token_ids, bf16.token_ids) for x, y in zip(a, b)]
    same_token = sum(x == y for x, y in pairs) / len(pairs)
    first_diff = [next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None) for a, b in zip(fp32.token_ids, bf16.token_ids)]
    diverged = [i for i in first_diff if i is not None]
    report("caption: bf16 vs fp32 on CUDA (random coca_ViT-L-14, 2 photos x 24 layers, study's settings)",
           [f"identical captions {100 * same_caption:.1f}%, identical tokens at aligned positions {100 * same_token:.1f}%",
            f"where they differ, the first differing token is at position {sorted(diverged)[len(diverged) // 2] if diverged else '-'} (median)"])


def decoder_memory(model, rows: int) -> tuple[int, int]:
    """(bytes of a float32 decoder's weights, peak bytes of decoding ``rows`` rows with it)."""
    decoder = CachedCocaDecoder(model)
    embs = torch.randn(rows, 255, 768, device="cuda")
    peak = peak_extra_bytes(lambda: decoder.generate(embs))[0]
    return sum(t.numel() * t.element_size() for t in [*decoder.parameters(), *decoder.buffers()]), peak


def test_real_out_of_memory_backs_off_and_matches_an_uncapped_run(big, tmp_path, caplog):
    """GPU memory capped so that 96 rows cannot decode at once: a real allocation failure; the
    back-off halves until it fits, and the captions equal an uncapped run at that batch size."""
    shard = jpeg_shard(str(tmp_path / "oom-000000.tar"), 4, size=(320, 240))
    extract_shard(shard, str(tmp_path / "f"), big, ExtractSettings(batch_size=4), "cuda")
    weights, per8 = decoder_memory(big.model, rows=8)
    features_on_gpu = 2 * 96 * 257 * 1024 * 4  # a chunk's block tokens and their image embeddings
    caplog.set_level(logging.WARNING)
    with capped_gpu_memory(weights + features_on_gpu + int(per8 * 2.5)):
        (capped,) = run_caption(str(tmp_path / "f"), str(tmp_path / "c1"), CaptionSettings(batch_size=96))
    sizes = [int(m) for m in re.findall(r"going on with (\d+)", caplog.text)]
    assert sizes and "out of GPU memory at batch size 96" in caplog.text, caplog.text
    (plain,) = run_caption(str(tmp_path / "f"), str(tmp_path / "c2"), CaptionSettings(batch_size=sizes[-1]))
    assert capped["rows"] == plain["rows"] == 96
    a = read_table(str(tmp_path / "c1" / "oom-000000" / CAPTIONS_NAME), CAPTIONS_SCHEMA).to_pylist()
    b = read_table(str(tmp_path / "c2" / "oom-000000" / CAPTIONS_NAME), CAPTIONS_SCHEMA).to_pylist()
    assert [(r["image_key"], r["layer"], r["token_ids"]) for r in a] == [(r["image_key"], r["layer"], r["token_ids"]) for r in b]
    report("caption: real out-of-memory", [f"batch 96 -> {sizes[-1]} under the cap; captions identical to an uncapped run "
                                           "at that batch size"])
