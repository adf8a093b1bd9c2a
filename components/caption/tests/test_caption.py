"""The caption step end to end: features on S3 -> captions Parquet, resume, the reference captions' round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import weakref

import pyarrow as pa
import pytest
import torch

from latent_verbalizer.components.caption.caption import CaptionSettings, run_caption
from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.contracts import CAPTIONS_FORMAT, CAPTIONS_SCHEMA, CAPTIONS_VERSION
from latent_verbalizer.components.common.tables import read_table, table_metadata, write_table
from latent_verbalizer.components.extract.extract import ExtractSettings, run_extract
from tests.images import jpeg_shard, skimage_photo_paths

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
REFERENCE = os.path.join(REPO, "..", "shared", "reference")


def test_captions_for_every_image_and_layer_on_s3(s3_bucket, tmp_path):
    jpeg_shard(str(tmp_path / "a-000000.tar"), 5)
    jpeg_shard(str(tmp_path / "a-000001.tar"), 3, start_seed=50)
    for name in ("a-000000.tar", "a-000001.tar"):
        storage.write_bytes(f"{s3_bucket}/shards/{name}", (tmp_path / name).read_bytes())
    run_extract(storage.expand_pattern(s3_bucket + "/shards/a-{000000..000001}.tar"), s3_bucket + "/features",
                ExtractSettings(model="tiny-random-coca", batch_size=2, device="cpu", layers="0,2,5"))
    manifests = run_caption(s3_bucket + "/features", s3_bucket + "/captions", CaptionSettings(batch_size=4, device="cpu"))
    assert [m["rows"] for m in manifests] == [15, 9]

    table = read_table(s3_bucket + "/captions/a-000000/captions.parquet", CAPTIONS_SCHEMA)
    rows = table.to_pylist()
    assert [(r["image_key"], r["layer"]) for r in rows] == [(f"img{i:05d}", l) for i in range(5) for l in (0, 2, 5)]
    for r in rows:
        assert r["shard"] == "a-000000" and r["n_tokens"] == len(r["token_ids"]) and r["stop"] in ("eos", "pad", "length")
        assert 0 < r["entropy_bits"] < 16 and r["mean_logprob"] < 0
    meta = table_metadata(table)
    assert meta["format"] == CAPTIONS_FORMAT and meta["parameters"]["model"] == "tiny-random-coca"
    assert meta["parameters"]["precision"] == "float32" and meta["parameters"]["tf32"] is False and meta["package_version"]

    # a re-run skips finished shards (the Parquet object is not rewritten)
    client = storage.s3_client()
    loc = storage.parse_s3(s3_bucket + "/captions/a-000000/captions.parquet")
    before = client.head_object(Bucket=loc.bucket, Key=loc.key)["LastModified"]
    run_caption(s3_bucket + "/features", s3_bucket + "/captions", CaptionSettings(batch_size=4, device="cpu"))
    assert client.head_object(Bucket=loc.bucket, Key=loc.key)["LastModified"] == before
    with pytest.raises(ValueError, match="another --out"):
        run_caption(s3_bucket + "/features", s3_bucket + "/captions", CaptionSettings(batch_size=4, device="cpu", seq_len=10))


def test_caption_layer_subset_and_missing_layers(tmp_path):
    jpeg_shard(str(tmp_path / "b-000000.tar"), 2)
    run_extract([str(tmp_path / "b-000000.tar")], str(tmp_path / "f"), ExtractSettings(model="tiny-random-coca", device="cpu", layers="1,3"))
    (m,) = run_caption(str(tmp_path / "f"), str(tmp_path / "c"), CaptionSettings(device="cpu", layers="3"))
    assert m["rows"] == 2 and m["layers"] == [3]
    with pytest.raises(ValueError, match="re-run extract"):
        run_caption(str(tmp_path / "f"), str(tmp_path / "c2"), CaptionSettings(device="cpu", layers="2"))
    with pytest.raises(FileNotFoundError, match="run extract first"):
        run_caption(str(tmp_path / "nothing"), str(tmp_path / "c3"), CaptionSettings(device="cpu"))


@pytest.mark.reference_data
@pytest.mark.skipif(not os.path.exists(REFERENCE), reason="../shared/reference is not beside this checkout")
def test_reference_captions_round_trip_through_parquet(tmp_path):
    caps = json.load(open(os.path.join(REFERENCE, "caps_batch0.json"), encoding="utf-8"))
    rows = []
    for layer_name, captions in caps.items():
        layer = int(layer_name.split("_")[1])
        for i, c in enumerate(captions):
            rows.append({"image_key": str(i), "shard": "batch0", "layer": layer, "caption": c, "token_ids": [],
                         "n_tokens": 0, "stop": "eos", "entropy_bits": 0.0, "mean_logprob": 0.0})
    rows.append(dict(rows[0], caption="", image_key="empty"))
    rows.append(dict(rows[0], caption="ünïcödé 😍 \u3131\u3131 <b>&amp;</b>", image_key="unicode"))
    uri = str(tmp_path / "ref.parquet")
    write_table(uri, pa.Table.from_pylist(rows, schema=CAPTIONS_SCHEMA), CAPTIONS_SCHEMA, CAPTIONS_FORMAT, CAPTIONS_VERSION, {})
    back = read_table(uri, CAPTIONS_SCHEMA).column("caption").to_pylist()
    assert back == [r["caption"] for r in rows]
    assert len(back) == 12002


def test_interpret_prints_every_layer(tmp_path):
    image = skimage_photo_paths()[0]
    out = subprocess.run([sys.executable, "-m", "latent_verbalizer.pipeline.cli", "interpret", image, "--model", "tiny-random-coca", "--json",
                          "--device", "cpu"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(l) for l in out.stdout.splitlines()]
    assert [l["layer"] for l in lines] == list(range(6))
    assert all(l["image"] == image and isinstance(l["caption"], str) and l["token_ids"] for l in lines)
    table = subprocess.run([sys.executable, "-m", "latent_verbalizer.pipeline.cli", "interpret", image, "--model", "tiny-random-coca", "--layers",
                            "0,5", "--device", "cpu"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert table.returncode == 0 and "layer  entropy  caption" in table.stdout
    bad = subprocess.run([sys.executable, "-m", "latent_verbalizer.pipeline.cli", "interpret", str(tmp_path / "missing.jpg"),
                          "--model", "tiny-random-coca"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "missing.jpg does not exist" in bad.stderr


def test_out_of_memory_halves_the_decode_batch(tmp_path, monkeypatch):
    """Inject a GPU out-of-memory for batches over 3 rows: every caption still comes, the same as without it."""
    from latent_verbalizer.components.caption.coca_decoder import CachedCocaDecoder

    jpeg_shard(str(tmp_path / "o-000000.tar"), 3)
    run_extract([str(tmp_path / "o-000000.tar")], str(tmp_path / "f"), ExtractSettings(model="tiny-random-coca", device="cpu", layers="0,5"))
    (plain,) = run_caption(str(tmp_path / "f"), str(tmp_path / "c1"), CaptionSettings(device="cpu", batch_size=8))
    real = CachedCocaDecoder.generate
    sizes = []
    failed_caches = []  # the KV cache of each failed batch: freed before the retry starts
    alive_at_retry = []

    def tight_memory(self, embs, *args, **kwargs):
        sizes.append(len(embs))
        alive_at_retry.extend(ref() is not None for ref in failed_caches)
        if len(embs) > 3:
            cache = self.new_cache(self.image_embeddings(torch.zeros(len(embs), 65, 64)))
            failed_caches.append(weakref.ref(cache))
            raise torch.OutOfMemoryError("injected: CUDA out of memory")
        return real(self, embs, *args, **kwargs)

    monkeypatch.setattr(CachedCocaDecoder, "generate", tight_memory)
    (squeezed,) = run_caption(str(tmp_path / "f"), str(tmp_path / "c2"), CaptionSettings(device="cpu", batch_size=8))
    assert sizes[0] == 6 and max(sizes[1:]) <= 3
    assert alive_at_retry and not any(alive_at_retry)  # the retry came after the handler was left
    a = read_table(str(tmp_path / "c1" / "o-000000" / "captions.parquet"), CAPTIONS_SCHEMA).to_pylist()
    b = read_table(str(tmp_path / "c2" / "o-000000" / "captions.parquet"), CAPTIONS_SCHEMA).to_pylist()
    assert [(r["image_key"], r["layer"], r["token_ids"]) for r in a] == [(r["image_key"], r["layer"], r["token_ids"]) for r in b]
    assert squeezed["rows"] == plain["rows"] == 6


def test_embedding_pass_out_of_memory_halves_its_batch(tmp_path):
    """The image-embedding pass (CoCa's attentional pooler over a chunk) runs inside the back-off:
    Triton's allocation failure (a RuntimeError, not torch.OutOfMemoryError) for more than 2 images
    halves its batch, and the captions are those of an unconstrained run."""
    jpeg_shard(str(tmp_path / "e-000000.tar"), 5)
    run_extract([str(tmp_path / "e-000000.tar")], str(tmp_path / "f"), ExtractSettings(model="tiny-random-coca", device="cpu", layers="0,5"))
    (plain,) = run_caption(str(tmp_path / "f"), str(tmp_path / "c1"), CaptionSettings(device="cpu", batch_size=8))
    pooled = []

    def small_gpu(module, args):
        if type(module).__name__ == "AttentionalPooler":
            pooled.append(len(args[0]))
            if len(args[0]) > 2:
                raise RuntimeError("Triton Error [CUDA]: out of memory")

    handle = torch.nn.modules.module.register_module_forward_pre_hook(small_gpu)
    try:
        (squeezed,) = run_caption(str(tmp_path / "f"), str(tmp_path / "c2"), CaptionSettings(device="cpu", batch_size=8))
    finally:
        handle.remove()
    assert pooled[:3] == [5, 2, 2] and max(pooled[1:]) <= 2        # halved from the whole chunk, and kept
    a = read_table(str(tmp_path / "c1" / "e-000000" / "captions.parquet"), CAPTIONS_SCHEMA).to_pylist()
    b = read_table(str(tmp_path / "c2" / "e-000000" / "captions.parquet"), CAPTIONS_SCHEMA).to_pylist()
    assert [(r["image_key"], r["layer"], r["token_ids"]) for r in a] == [(r["image_key"], r["layer"], r["token_ids"]) for r in b]
    assert squeezed["rows"] == plain["rows"] == 10
