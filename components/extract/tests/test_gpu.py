"""Extract on a GPU (``pytest -m gpu``): the pinned-buffer, CUDA-event and background-writer
path against a synchronous copy, fidelity to a CPU fp32 forward, and a real out-of-memory."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from latent_verbalizer.components.common.features import iter_feature_chunks
from latent_verbalizer.components.common.model_families.coca_loading import vision_block_outputs
from latent_verbalizer.components.common.tar_samples import iter_samples
from latent_verbalizer.components.extract.extract import ExtractSettings, extract_shard
from latent_verbalizer.components.extract.image_decoding import DEFAULT_MAX_PIXELS, decode_image
from tests.gpu import GPU_ONLY, capped_gpu_memory, full_size_coca_on_cuda, peak_extra_bytes, report
from tests.images import jpeg_shard

pytestmark = GPU_ONLY

# Relative (Frobenius) error of the stored features against a CPU fp32 forward, per layer:
# what components/extract/README.md documents.
TOLERANCE = {"float16": 1e-2, "bfloat16": 5e-2, "float32": 1e-4}


@pytest.fixture(scope="module")
def big():
    return full_size_coca_on_cuda()


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    return jpeg_shard(str(tmp_path_factory.mktemp("shards") / "gpu-000000.tar"), 40, size=(320, 240))


def stored(shard_dir: str) -> dict[str, dict[int, torch.Tensor]]:
    """image key -> layer -> stored features, from the finished shard."""
    out = {}
    for chunk in iter_feature_chunks(shard_dir):
        for i, key in enumerate(chunk.image_keys):
            out[key] = {layer: t[i] for layer, t in chunk.layers.items()}
    return out


def pixels_of(loaded, shard: str) -> tuple[list[str], torch.Tensor]:
    keys, pixels = [], []
    for sample in iter_samples(shard, []):
        image = decode_image(sample.image_bytes()[1], target_size=224, max_pixels=DEFAULT_MAX_PIXELS)
        keys.append(sample.key)
        pixels.append(loaded.preprocess(image))
    return keys, torch.stack(pixels)


def test_async_pinned_path_equals_a_synchronous_copy(big, shard, tmp_path):
    """Pinned buffers reused across batches, copies that do not wait, writers that wait on a
    CUDA event: what lands in storage is exactly a plain synchronous copy of the same forward."""
    layers = list(range(big.n_layers))
    manifest = extract_shard(shard, str(tmp_path), big, ExtractSettings(batch_size=8, writers=2, layers="all"), "cuda")
    assert manifest.image_count == 40 and len(manifest.objects) == 5
    ours = stored(str(tmp_path / "gpu-000000"))
    keys, pixels = pixels_of(big, shard)
    for start in range(0, len(keys), 8):
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            outs = vision_block_outputs(big.model.visual, pixels[start:start + 8].cuda(), layers)
        for layer, out in zip(layers, outs):
            synchronous = out.to(torch.float16).cpu()
            for i, key in enumerate(keys[start:start + 8]):
                assert torch.equal(ours[key][layer], synchronous[i]), (key, layer)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_features_within_documented_tolerance_of_cpu_fp32(big, shard, tmp_path, dtype):
    manifest = extract_shard(shard, str(tmp_path), big, ExtractSettings(batch_size=8, dtype=dtype), "cuda")
    if dtype == "float32":
        assert manifest.made_by["tf32"] is False
    ours = stored(str(tmp_path / "gpu-000000"))
    keys, pixels = pixels_of(big, shard)
    cpu_visual = copy.deepcopy(big.model.visual).cpu().float()
    layers = list(range(big.n_layers))
    reference = vision_block_outputs(cpu_visual, pixels[:4], layers)
    errors = []
    for layer, ref in zip(layers, reference):
        got = torch.stack([ours[k][layer] for k in keys[:4]]).float()
        errors.append(float((got - ref).norm() / ref.norm()))
    report(f"extract: {dtype} features on the GPU vs a CPU fp32 forward (relative Frobenius error per layer)",
           ["| layer | " + " | ".join(str(i) for i in layers) + " |", "|---" * (len(layers) + 1) + "|",
            "| error | " + " | ".join(f"{e:.1e}" for e in errors) + " |",
            "", f"worst {max(errors):.2e} (tolerance {TOLERANCE[dtype]:.0e})"])
    assert max(errors) <= TOLERANCE[dtype], errors


def test_real_out_of_memory_backs_off_and_matches_an_uncapped_run(big, shard, tmp_path, caplog):
    """GPU memory capped so that a batch of 32 cannot fit: a real allocation failure, the
    back-off halves until it fits, and the features equal an uncapped run at that batch size."""
    layers = list(range(big.n_layers))
    _, pixels = pixels_of(big, shard)

    def forward(n):
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            return vision_block_outputs(big.model.visual, pixels[:n].cuda(), layers)

    per4 = peak_extra_bytes(lambda: forward(4))[0]  # the outputs are freed before the cap is set
    caplog.set_level(logging.WARNING)
    with capped_gpu_memory(int(per4 * 2.5)):
        capped = extract_shard(shard, str(tmp_path / "capped"), big, ExtractSettings(batch_size=32), "cuda")
    final = capped.made_by["batch_size"]
    assert final < 32 and "out of GPU memory at batch size 32" in caplog.text
    plain = extract_shard(shard, str(tmp_path / "plain"), big, ExtractSettings(batch_size=final), "cuda")
    assert capped.image_count == plain.image_count == 40
    a, b = stored(str(tmp_path / "capped" / "gpu-000000")), stored(str(tmp_path / "plain" / "gpu-000000"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k][layer], b[k][layer]) for k in a for layer in layers)
    report("extract: real out-of-memory", [f"cap: {per4 * 2.5 / 2**20:.0f} MiB above the model; batch 32 -> {final}; "
                                           "features identical to an uncapped run at that batch size"])
