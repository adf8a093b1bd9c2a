"""Extract against real parts: tiny-random-coca (real open_clip code), real tars, real S3."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.features import (
    iter_feature_chunks,
    read_chunk_header,
    read_manifest,
)
from latent_verbalizer.components.common.model_families import load_model
from latent_verbalizer.components.common.model_families.coca_loading import load_coca
from latent_verbalizer.components.extract.extract import ExtractSettings, extract_shard, run_extract
from latent_verbalizer.components.extract.image_decoding import decode_image
from latent_verbalizer.components.extract.shards import write_shards
from latent_verbalizer.pipeline.cli import main as lverb
from tests.images import encode, jpeg_shard, random_rgb, skimage_photo_paths, write_tar

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random-coca")


@pytest.fixture(scope="module")
def photo_shard(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for p in skimage_photo_paths()[:6]:
        os.symlink(p, folder / os.path.basename(p))
    out = tmp_path_factory.mktemp("shards")
    return write_shards(str(folder), str(out), per_shard=100)[0]


def hooked_reference(loaded, pixels: torch.Tensor) -> list[torch.Tensor]:
    """The reference study's way: forward hooks on every block of a full forward."""
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o.detach().clone()))
             for b in loaded.model.visual.transformer.resblocks]
    with torch.no_grad():
        loaded.model.visual(pixels)
    for h in hooks:
        h.remove()
    return outs


@pytest.mark.parametrize("dtype,atol", [("float32", 1e-5), ("float16", 2e-3)])
def test_features_equal_hooked_full_forward(tiny, photo_shard, tmp_path, dtype, atol):
    settings = ExtractSettings(model="tiny-random-coca", dtype=dtype, batch_size=4, device="cpu")
    manifest = extract_shard(photo_shard, str(tmp_path), tiny, settings, "cpu")
    assert manifest.image_count == 6 and len(manifest.objects) == 2  # batches of 4 + 2
    chunks = list(iter_feature_chunks(str(tmp_path / "shard-000000")))
    keys = [k for c in chunks for k in c.image_keys]
    assert keys == sorted(os.path.splitext(os.path.basename(p))[0] for p in skimage_photo_paths()[:6])

    # recompute from the same bytes with the model's own transform and hooks
    from latent_verbalizer.components.common.tar_samples import iter_samples
    pixels = torch.stack([tiny.preprocess(decode_image(s.image_bytes()[1])) for s in iter_samples(photo_shard, [])])
    reference = hooked_reference(tiny, pixels)
    for layer in range(tiny.n_layers):
        ours = torch.cat([c.layers[layer] for c in chunks]).float()
        assert ours.shape == (6, 65, 64)
        torch.testing.assert_close(ours, reference[layer].to(getattr(torch, dtype)).float(), atol=atol, rtol=atol)


def test_chunks_are_standard_safetensors(tiny, photo_shard, tmp_path):
    extract_shard(photo_shard, str(tmp_path), tiny, ExtractSettings(model="tiny-random-coca", layers="1,3", batch_size=8, device="cpu"), "cpu")
    manifest = read_manifest(str(tmp_path / "shard-000000"))
    path = tmp_path / "shard-000000" / manifest.objects[0].key
    loaded = safetensors.torch.load(path.read_bytes())
    assert sorted(loaded) == ["layer_1", "layer_3"] and loaded["layer_1"].dtype == torch.float16
    header = read_chunk_header(str(path))
    assert header.metadata["model"] == "tiny-random-coca" and len(header.image_keys) == 6
    import hashlib
    data, digests = path.read_bytes(), manifest.objects[0].sha256
    assert hashlib.sha256(data[:header.data_start]).hexdigest() == digests["header"]
    for name, entry in header.entries.items():
        begin, end = entry["data_offsets"]
        assert hashlib.sha256(data[header.data_start + begin:header.data_start + end]).hexdigest() == digests[name]
    assert sorted(digests) == ["header", "layer_1", "layer_3"]
    assert header.data_start + max(e["data_offsets"][1] for e in header.entries.values()) == len(data), \
        "the parts cover every byte"


def test_s3_in_and_out_with_ranged_layer_reads(tiny, photo_shard, s3_bucket, monkeypatch):
    storage.write_bytes(s3_bucket + "/shards/shard-000000.tar", open(photo_shard, "rb").read())
    shards = storage.expand_pattern(s3_bucket + "/shards/shard-{000000..000000}.tar")
    result = run_extract(shards, s3_bucket + "/features", ExtractSettings(model="tiny-random-coca", batch_size=8, device="cpu"))
    assert not result.failed
    shard_dir = s3_bucket + "/features/shard-000000"
    manifest = read_manifest(shard_dir)
    assert manifest.image_count == 6 and manifest.layers == list(range(6))
    assert storage.list_uris(shard_dir) == sorted([shard_dir + "/manifest.json", shard_dir + "/" + manifest.objects[0].key])

    fetched = []
    real_read_range = storage.read_range
    monkeypatch.setattr(storage, "read_range", lambda u, s, n: fetched.append(n) or real_read_range(u, s, n))
    (chunk,) = iter_feature_chunks(shard_dir, layers=[2])
    assert list(chunk.layers) == [2] and chunk.layers[2].shape == (6, 65, 64)
    per_layer = 6 * 65 * 64 * 2
    assert per_layer in fetched
    assert sum(fetched) < manifest.objects[0].bytes / 3, "reading one layer of six must not fetch the whole chunk"


def test_rerun_is_a_no_op_and_other_parameters_are_refused(tiny, photo_shard, tmp_path):
    settings = ExtractSettings(model="tiny-random-coca", batch_size=8, device="cpu")
    extract_shard(photo_shard, str(tmp_path), tiny, settings, "cpu")
    manifest_path = tmp_path / "shard-000000" / "manifest.json"
    before = manifest_path.stat().st_mtime_ns
    extract_shard(photo_shard, str(tmp_path), tiny, settings, "cpu")
    assert manifest_path.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="another --out"):
        extract_shard(photo_shard, str(tmp_path), tiny, ExtractSettings(model="tiny-random-coca", layers="0", device="cpu"), "cpu")


def test_resume_after_kill_redoes_nothing(tmp_path):
    shard = jpeg_shard(str(tmp_path / "big-000000.tar"), 300)
    out = tmp_path / "features"
    cmd = [sys.executable, "-m", "latent_verbalizer.pipeline.cli", "extract", "--shards", shard, "--out", str(out),
           "--model", "tiny-random-coca", "--batch-size", "1", "--device", "cpu", "--layers", "0,5"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard_dir = out / "big-000000"
    deadline = time.time() + 120
    while time.time() < deadline:
        done = list(shard_dir.glob("chunk-*.safetensors")) if shard_dir.exists() else []
        if len(done) >= 5:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (shard_dir / "manifest.json").exists(), "killed mid-shard: there must be no manifest yet"
    survivors = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("chunk-*.safetensors")}
    assert 5 <= len(survivors) < 300

    assert lverb(["extract", "--shards", shard, "--out", str(out), "--model", "tiny-random-coca", "--batch-size", "7", "--device", "cpu", "--layers", "0,5"]) == 0
    manifest = read_manifest(str(shard_dir))
    assert manifest.image_count == 300
    keys = [k for c in iter_feature_chunks(str(shard_dir)) for k in c.image_keys]
    assert sorted(keys) == [f"img{i:05d}" for i in range(300)] and len(set(keys)) == 300
    for name, mtime in survivors.items():  # finished chunks were kept, not rewritten
        assert (shard_dir / name).stat().st_mtime_ns == mtime
    listed = {o.key for o in manifest.objects}
    on_disk = {p.name for p in shard_dir.iterdir() if p.name != "manifest.json" and not p.name.startswith(".partial")}
    assert listed == on_disk


# ------------------------------------------------------------------ bad input

def test_bad_samples_are_skipped_and_recorded(tiny, tmp_path):
    good = random_rgb()
    full = encode(good, "JPEG")
    truncated = full[: len(full) // 2]
    cmyk = encode(good.convert("CMYK"), "JPEG")
    png16 = encode(Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)), "PNG")
    grey = encode(good.convert("L"), "PNG")
    alpha = encode(good.convert("RGBA"), "PNG")
    tiny_img = encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG")
    huge_jpeg = encode(Image.new("RGB", (12000, 12000), (30, 60, 90)), "JPEG", quality=50)
    members = [
        ("good.jpg", encode(good, "JPEG")), ("good.json", b'{"captions": ["a thing"]}'),
        ("truncated.jpg", truncated),
        ("notanimage.jpg", b"this is text, not a JPEG"),
        ("cmyk.jpg", cmyk), ("png16.png", png16), ("grey.png", grey), ("alpha.png", alpha),
        ("one.png", tiny_img), ("huge.jpg", huge_jpeg),
        ("noimage.json", b"{}"), ("noimage.txt", b"caption only"),
        ("good.jpg", encode(good, "JPEG")),  # the same key again, later in the shard
    ]
    shard = write_tar(str(tmp_path / "bad-000000.tar"), members)
    manifest = extract_shard(shard, str(tmp_path / "out"), tiny, ExtractSettings(model="tiny-random-coca", batch_size=4, device="cpu"), "cpu")
    reasons = {s.key: s.reason for s in manifest.skipped}
    assert set(reasons) == {"truncated", "notanimage", "noimage", "good"}
    assert "truncated" in reasons["truncated"] and "not a readable image" in reasons["notanimage"]
    assert "no image" in reasons["noimage"] and "duplicate key" in reasons["good"]
    keys = [k for c in iter_feature_chunks(str(tmp_path / "out" / "bad-000000")) for k in c.image_keys]
    assert keys == ["good", "cmyk", "png16", "grey", "alpha", "one", "huge"]
    assert manifest.image_count == 7


def test_decode_bounds_memory_and_converts_modes():
    big_png = encode(Image.new("L", (9000, 8000)), "PNG")
    with pytest.raises(ValueError, match="too large"):
        decode_image(big_png, max_pixels=64_000_000)
    huge = decode_image(encode(Image.new("RGB", (12000, 12000), (1, 2, 3)), "JPEG"))
    assert huge.mode == "RGB" and max(huge.size) <= 12000 // 8 * 2  # decoded at reduced scale
    arr16 = np.full((4, 4), 65535, dtype=np.uint16)
    assert np.asarray(decode_image(encode(Image.fromarray(arr16), "PNG"))).max() == 255  # scaled, not clipped to 1/256
    assert decode_image(encode(random_rgb().convert("CMYK"), "JPEG")).mode == "RGB"


def absurd_shape_shard(path: str) -> str:
    """Two photos and a legal PNG of 64,000,000 x 1 pixels: inside the 64 Mpx area cap, and the
    model's transform would scale it to 112 x 7 billion pixels."""
    sliver = encode(Image.new("L", (64_000_000, 1)), "PNG")
    return write_tar(path, [("a.jpg", encode(random_rgb(seed=1), "JPEG")), ("sliver.png", sliver),
                            ("b.jpg", encode(random_rgb(seed=2), "JPEG"))])


@pytest.fixture(scope="module")
def sliver_shard(tmp_path_factory):
    return absurd_shape_shard(str(tmp_path_factory.mktemp("sliver") / "sliver-000000.tar"))


def test_an_absurd_image_shape_is_a_skip_that_names_the_shape(tiny, tmp_path, sliver_shard):
    manifest = extract_shard(sliver_shard, str(tmp_path), tiny, ExtractSettings(batch_size=4, device="cpu"), "cpu")
    reasons = {s.key: s.reason for s in manifest.skipped}
    assert list(reasons) == ["sliver"] and manifest.image_count == 2
    assert reasons["sliver"].startswith("image shape 64000000x1 refused: its sides are in a ratio over 32:1")
    side = encode(Image.new("L", (40_000, 1_600)), "PNG")  # 64 Mpx, ratio 25:1, but a side over 32,768
    with pytest.raises(ValueError, match="image shape 40000x1600 refused: a side over 32768 pixels"):
        decode_image(side)


def test_any_other_failure_of_one_image_is_a_recorded_skip(tiny, tmp_path, sliver_shard):
    # the shape caps lifted: the model's own transform fails on the sliver (OverflowError), and
    # that is the image's problem, not the step's
    settings = ExtractSettings(batch_size=4, device="cpu", max_side=10**9, max_aspect_ratio=1e9)
    manifest = extract_shard(sliver_shard, str(tmp_path), tiny, settings, "cpu")
    reasons = {s.key: s.reason for s in manifest.skipped}
    assert list(reasons) == ["sliver"] and manifest.image_count == 2
    assert reasons["sliver"].startswith("the model's transform failed on this 64000000x1 image (OverflowError: ")


def test_a_sample_file_over_the_size_cap_is_skipped_unread(tiny, tmp_path):
    big = encode(random_rgb((640, 480), seed=3), "PNG")
    shard = write_tar(str(tmp_path / "big-000000.tar"), [
        ("a.jpg", encode(random_rgb(seed=1), "JPEG")), ("big.png", big), ("big.json", b"{}"),
        ("b.jpg", encode(random_rgb(seed=2), "JPEG"))])
    settings = ExtractSettings(batch_size=4, device="cpu", max_member_bytes=100_000)
    manifest = extract_shard(shard, str(tmp_path / "out"), tiny, settings, "cpu")
    assert manifest.image_count == 2
    assert [(s.key, s.reason) for s in manifest.skipped] == [
        ("big", f"big.png is {len(big):,} bytes, over the 100,000-byte cap on one file of a sample; "
                "shrink or leave out that file")]
    assert ExtractSettings().max_member_bytes == 256 * 1024 * 1024


def test_bad_shards_fail_alone_with_their_name(tiny, tmp_path, photo_shard):
    not_tar = tmp_path / "nottar-000000.tar"
    not_tar.write_bytes(b"\x89PNG not a tar at all" * 100)
    empty = tmp_path / "empty-000000.tar"
    write_tar(str(empty), [])
    no_image = write_tar(str(tmp_path / "noimg-000000.tar"), [("a.jpg", b"text, not a JPEG"), ("b.json", b"{}")])
    truncated_tar = tmp_path / "cut-000000.tar"
    truncated_tar.write_bytes(open(photo_shard, "rb").read()[:5000])
    refused = jpeg_shard(str(tmp_path / "other-000000.tar"), 2)  # its folder holds features of other layers
    run_extract([refused], str(tmp_path / "out"), ExtractSettings(model="tiny-random-coca", layers="0", device="cpu"))
    shards = [str(not_tar), str(empty), no_image, str(truncated_tar), refused, photo_shard]
    result = run_extract(shards, str(tmp_path / "out"), ExtractSettings(model="tiny-random-coca", batch_size=8, device="cpu"))
    assert set(result.failed) == set(shards) - {photo_shard} == set(result.errors)
    assert "nottar-000000.tar is not a tar archive" in result.failed[str(not_tar)]
    assert "empty-000000.tar holds no samples" in result.failed[str(empty)]
    assert "noimg-000000.tar holds no usable image: all 2 samples were skipped (first: " in result.failed[no_image]
    assert "cut-000000.tar" in result.failed[str(truncated_tar)]
    assert "other-000000 already holds features made with" in result.failed[refused]
    assert list(result.manifests) == [photo_shard] and result.manifests[photo_shard].image_count == 6
    assert read_manifest(str(tmp_path / "out" / "cut-000000")) is None  # never taken as done


def test_cli_errors_name_the_input(tmp_path, photo_shard, capsys):
    assert lverb(["extract", "--shards", str(tmp_path / "none-{000..003}.tar"), "--out", str(tmp_path)]) == 2
    assert "matches no shard" in capsys.readouterr().err
    assert lverb(["extract", "--shards", photo_shard, "--out", str(tmp_path), "--model", "tiny-random-coca", "--layers", "0,6",
                  "--device", "cpu"]) == 2
    assert "layer 6 is out of range: the model has 6 blocks" in capsys.readouterr().err
    assert lverb(["extract", "--shards", photo_shard, "--out", str(tmp_path), "--model", "coca_ViT-Q-99"]) == 2
    assert "unknown model 'coca_ViT-Q-99'" in capsys.readouterr().err


def test_hub_tag_offline_explains_local_weights(photo_shard, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "latent_verbalizer.pipeline.cli", "extract", "--shards", photo_shard, "--out", str(tmp_path),
                           "--model", "coca_ViT-B-32", "--pretrained", "mscoco_finetuned_laion2B-s13B-b90k"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "pass its local path or s3:// URI as --pretrained" in proc.stderr


def test_weights_from_local_file_and_s3(tiny, tmp_path, s3_bucket):
    path = tmp_path / "tiny.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in tiny.model.state_dict().items()}, str(path))
    storage.write_bytes(s3_bucket + "/weights/tiny.safetensors", path.read_bytes())
    state_dict_pt = tmp_path / "tiny.pt"  # a plain state dict, read with weights_only=True (no pickle code runs)
    torch.save(tiny.model.state_dict(), str(state_dict_pt))
    for source in (str(path), s3_bucket + "/weights/tiny.safetensors", str(state_dict_pt)):
        again = load_coca("tiny-random-coca", source)
        for (k, a), b in zip(tiny.model.state_dict().items(), again.model.state_dict().values()):
            assert torch.equal(a, b), k


def test_shards_from_karpathy_split_keep_reference_captions(tmp_path):
    photos = skimage_photo_paths()[:3]
    root = tmp_path / "coco"
    (root / "val2014").mkdir(parents=True)
    images = []
    for i, p in enumerate(photos):
        name = f"COCO_val2014_{i:012d}.{p.rsplit('.', 1)[1]}"
        os.symlink(p, root / "val2014" / name)
        images.append({"filepath": "val2014", "filename": name, "split": "test" if i < 2 else "train",
                       "cocoid": i, "sentences": [{"raw": f"caption {i} a"}, {"raw": f"caption {i} b"}]})
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": images}))
    assert lverb(["shards", str(root), str(tmp_path / "out"), "--karpathy", str(tmp_path / "dataset_coco.json")]) == 0
    from latent_verbalizer.components.common.tar_samples import iter_samples
    samples = list(iter_samples(str(tmp_path / "out" / "shard-000000.tar"), []))
    assert [s.key for s in samples] == ["COCO_val2014_000000000000", "COCO_val2014_000000000001"]
    assert json.loads(samples[1].files["json"])["captions"] == ["caption 1 a", "caption 1 b"]


def test_resume_with_a_gap_in_chunk_numbers_loses_nothing(tiny, photo_shard, tmp_path):
    """Writers finish out of order: a killed run can leave chunk 3 but not chunk 2."""
    settings = ExtractSettings(model="tiny-random-coca", batch_size=1, device="cpu", layers="0")
    extract_shard(photo_shard, str(tmp_path), tiny, settings, "cpu")
    shard_dir = tmp_path / "shard-000000"
    (shard_dir / "manifest.json").unlink()
    (shard_dir / "chunk-00002.safetensors").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in shard_dir.glob("chunk-*")}
    manifest = extract_shard(photo_shard, str(tmp_path), tiny, settings, "cpu")
    keys = [k for c in iter_feature_chunks(str(shard_dir)) for k in c.image_keys]
    assert manifest.image_count == 6 and len(set(keys)) == 6
    assert all((shard_dir / name).stat().st_mtime_ns == mtime for name, mtime in kept.items())


def test_out_of_memory_halves_the_batch(tiny, photo_shard, tmp_path, monkeypatch):
    """Inject a GPU out-of-memory for batches over 2 images: the shard still completes, in smaller chunks."""
    import latent_verbalizer.components.extract.extract as extract_module

    real = extract_module.ShardExtractor.forward
    seen = []

    def tight_memory(self, pixels):
        seen.append(len(pixels))
        if len(pixels) > 2:
            raise torch.OutOfMemoryError("injected: CUDA out of memory")
        return real(self, pixels)

    monkeypatch.setattr(extract_module.ShardExtractor, "forward", tight_memory)
    manifest = extract_shard(photo_shard, str(tmp_path), tiny, ExtractSettings(model="tiny-random-coca", batch_size=8, device="cpu"), "cpu")
    assert manifest.image_count == 6
    assert seen[:3] == [6, 3, 1] and max(o.images for o in manifest.objects) <= 2  # 6 -> 3 -> 1


def test_a_shard_of_the_same_name_never_reuses_anothers_features(tiny, photo_shard, tmp_path):
    other = tmp_path / "elsewhere" / "shard-000000.tar"
    other.parent.mkdir()
    jpeg_shard(str(other), 2)
    with pytest.raises(ValueError, match="same name"):
        run_extract([photo_shard, str(other)], str(tmp_path / "out"), ExtractSettings(model="tiny-random-coca", device="cpu"))
    extract_shard(photo_shard, str(tmp_path / "out"), tiny, ExtractSettings(model="tiny-random-coca", device="cpu"), "cpu")
    with pytest.raises(ValueError, match="holds the features of"):
        extract_shard(str(other), str(tmp_path / "out"), tiny, ExtractSettings(model="tiny-random-coca", device="cpu"), "cpu")


def test_a_failing_write_stops_the_shard_early(tiny, photo_shard, tmp_path, monkeypatch):
    """A destination that refuses writes fails the shard at the next batch, leaving no manifest."""
    import latent_verbalizer.components.extract.extract as extract_module

    written = []

    def refuse(uri, tensors, metadata):
        written.append(uri)
        raise storage.StorageError(f"cannot write {uri}: injected")

    monkeypatch.setattr(extract_module, "write_feature_chunk", refuse)
    with pytest.raises(storage.StorageError, match="injected"):
        extract_shard(photo_shard, str(tmp_path), tiny, ExtractSettings(model="tiny-random-coca", batch_size=1, device="cpu", writers=1), "cpu")
    assert len(written) <= 3, "the shard stops at the first batch after a failed write, not after all six"
    assert read_manifest(str(tmp_path / "shard-000000")) is None
