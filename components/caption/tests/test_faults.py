"""Caption under faults: the object store restarted in the middle of a run, and the process
killed between shards. The run (or its re-run) finishes with a caption for every (image,
layer), each exactly once, and a re-run redoes no finished shard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from latent_verbalizer.components.caption.caption import CAPTIONS_NAME, CaptionSettings, run_caption
from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.contracts import CAPTIONS_SCHEMA, MANIFEST_NAME
from latent_verbalizer.components.common.tables import read_table
from latent_verbalizer.components.extract.extract import ExtractSettings, run_extract
from tests.images import jpeg_shard

N_LAYERS = 6  # tiny-random-coca


def _features(tmp_path, bucket: str, shards: int, images: int) -> str:
    storage.ensure_bucket(bucket + "/x")
    uris = []
    for i in range(shards):
        path = jpeg_shard(str(tmp_path / f"s-{i:06d}.tar"), images, start_seed=100 * i)
        uris.append(f"{bucket}/in/s-{i:06d}.tar")
        storage.write_bytes(uris[-1], open(path, "rb").read())
    out = bucket + "/features"
    # Small chunks, so that caption reads from the store all through its run.
    run_extract(uris, out, ExtractSettings(model="tiny-random-coca", pretrained="random", batch_size=2, device="cpu"))
    return out


def _caption_cmd(features: str, out: str) -> list[str]:
    return [sys.executable, "-m", "latent_verbalizer", "caption", "--features", features, "--out", out,
            "--precision", "float32", "--batch-size", "4", "--device", "cpu"]


def _rows(out: str, shard: str) -> list[tuple[str, int]]:
    table = read_table(storage.join(out, shard, CAPTIONS_NAME), CAPTIONS_SCHEMA)
    return list(zip(table.column("image_key").to_pylist(), table.column("layer").to_pylist()))


def _settings() -> CaptionSettings:
    return CaptionSettings(precision="float32", batch_size=4, device="cpu")


def test_s3_restart_mid_caption(own_s3_server, tmp_path):
    bucket = "s3://restart-caption"
    features = _features(tmp_path, bucket, shards=1, images=24)
    out = bucket + "/captions"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(_caption_cmd(features, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        for line in proc.stderr:  # the decoder starts once the first chunk has been read
            if "decode batch" in line:
                break
        assert proc.poll() is None, "caption ended before the store could be restarted"
        # Keep reading its log, so a full pipe never stalls the process while the store is down.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        own_s3_server.restart()
        first_rc = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    storage._client_for.cache_clear()
    if first_rc != 0:  # the outage outlasted the client's retries: the re-run does the shard
        run_caption(features, out, _settings())
    rows = _rows(out, "s-000000")
    assert len(rows) == len(set(rows)) == 24 * N_LAYERS


def test_killed_between_shards_resumes_without_redoing_the_finished_one(s3_bucket, tmp_path):
    features = _features(tmp_path, s3_bucket, shards=2, images=6)
    out = s3_bucket + "/captions"
    proc = subprocess.Popen(_caption_cmd(features, out), env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_manifest = storage.join(out, "s-000000", MANIFEST_NAME)
    try:
        deadline = time.time() + 300
        while not storage.exists(first_manifest) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert storage.exists(first_manifest), "the first shard did not finish"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    loc = storage.parse_s3(storage.join(out, "s-000000", CAPTIONS_NAME))
    before = storage.s3_client().head_object(Bucket=loc.bucket, Key=loc.key)["LastModified"]
    time.sleep(1.1)  # LastModified has whole seconds: a rewrite now would show

    manifests = run_caption(features, out, _settings())

    assert [m["rows"] for m in manifests] == [6 * N_LAYERS, 6 * N_LAYERS]
    after = storage.s3_client().head_object(Bucket=loc.bucket, Key=loc.key)["LastModified"]
    assert after == before, "the finished shard's captions were not rewritten"
    for shard in ("s-000000", "s-000001"):
        rows = _rows(out, shard)
        assert len(rows) == len(set(rows)) == 6 * N_LAYERS
