"""Two runs extracting the same shard into one storage prefix at once (real S3 server and a
local folder, real tiny-random-coca, real tars).

Without a lease both start at chunk 0, the second overwrites the first's chunks, and the
manifest written last lists digests of objects that are no longer there: the features fail
their checksums when read. With the lease the second run is refused, naming the first, and
the first's features read back intact.

The two writers are interleaved in one fixed order by a gate around the real chunk writer:
run A (batches of 2) stops after its first chunk is written, run B (batches of 3) goes as far
as it can, then A goes on.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.features import iter_feature_chunks, read_manifest
from latent_verbalizer.components.common.model_families import load_model
from latent_verbalizer.components.common.storage.write_lease import LEASE_NAME, LeaseHeldError
from latent_verbalizer.components.extract import extract as extract_module
from latent_verbalizer.components.extract.extract import ExtractSettings, extract_shard
from tests.images import jpeg_shard

GUARD_S = 120   # only against a hang: every wait below ends on an event the other writer sets


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random-coca")


@pytest.fixture(params=["s3", "local"])
def prefix(request, tmp_path):
    if request.param == "s3":
        return request.getfixturevalue("s3_bucket") + "/shared-prefix"
    return str(tmp_path / "shared-prefix")


class Gate:
    """Orders the two writers' chunk writes; A's chunks hold 2 images, B's 3 (their batch sizes)."""

    def __init__(self, real_write):
        self.real_write = real_write
        self.a_at_first_write = threading.Event()
        self.b_ready = threading.Event()       # B reached its first write, or B ended (refused)
        self.a_wrote_first = threading.Event()
        self.b_done = threading.Event()
        self.during_a_pause = None             # called while A is stopped after its first chunk

    def write(self, uri, tensors, metadata):
        is_a = len(json.loads(metadata["image_keys"])) == 2
        if is_a and not self.a_at_first_write.is_set():
            self.a_at_first_write.set()
            assert self.b_ready.wait(GUARD_S)
            result = self.real_write(uri, tensors, metadata)
            self.a_wrote_first.set()
            if self.during_a_pause is not None:
                self.during_a_pause()
            assert self.b_done.wait(GUARD_S)
            return result
        if not is_a and not self.b_ready.is_set():
            self.b_ready.set()
            assert self.a_wrote_first.wait(GUARD_S)
        return self.real_write(uri, tensors, metadata)


def shard_on(prefix: str, tmp_path) -> str:
    local = jpeg_shard(str(tmp_path / "two-000000.tar"), 6)
    if not storage.is_s3(prefix):
        return local
    uri = storage.join(prefix, "in", "two-000000.tar")
    storage.write_bytes(uri, open(local, "rb").read())
    return uri


def run_both(tiny, prefix, tmp_path, monkeypatch, during_a_pause=None):
    """A and B extract one shard into ``prefix/features`` at once; returns (A's result, B's result),
    each a manifest or the exception it raised."""
    shard = shard_on(prefix, tmp_path)
    out = storage.join(prefix, "features")
    gate = Gate(extract_module.write_feature_chunk)
    gate.during_a_pause = during_a_pause
    monkeypatch.setattr(extract_module, "write_feature_chunk", gate.write)
    results = {}

    def run(name, batch):
        try:
            settings = ExtractSettings(batch_size=batch, device="cpu", decoders=1, writers=1, run_id=f"run-{name}")
            results[name] = extract_shard(shard, out, tiny, settings, "cpu")
        except Exception as e:
            results[name] = e
        finally:
            if name == "b":
                gate.b_ready.set()
                gate.b_done.set()

    a = threading.Thread(target=run, args=("a", 2))
    a.start()
    assert gate.a_at_first_write.wait(GUARD_S), results.get("a")
    b = threading.Thread(target=run, args=("b", 3))
    b.start()
    b.join()
    a.join()
    return storage.join(out, "two-000000"), results["a"], results["b"]


def test_a_second_run_on_the_same_shard_is_refused_and_the_first_ones_features_stay_intact(
        tiny, prefix, tmp_path, monkeypatch):
    shard_dir, a, b = run_both(tiny, prefix, tmp_path, monkeypatch)
    assert isinstance(b, LeaseHeldError), b
    message = str(b)
    assert "run run-a on host" in message and shard_dir in message
    assert "own storage_prefix" in message and "wait for the other run to finish" in message

    assert a.image_count == 6 and [c.images for c in a.objects] == [2, 2, 2]
    chunks = list(iter_feature_chunks(shard_dir))      # every part checked against the manifest's sha256
    assert [k for c in chunks for k in c.image_keys] == [f"img{i:05d}" for i in range(6)]
    assert read_manifest(shard_dir).objects == a.objects
    assert not storage.exists(storage.join(shard_dir, LEASE_NAME))    # released when A finished


def test_a_refused_run_leaves_the_live_writers_partial_files_alone(tiny, tmp_path, monkeypatch):
    """``_existing_chunks`` removes partial files only under the lease: a second run used to
    delete the first run's chunk being written (its rename then fails, the shard is lost)."""
    prefix = str(tmp_path / "shared-prefix")
    shard_dir = os.path.join(prefix, "features", "two-000000")
    partial = os.path.join(shard_dir, storage.PARTIAL_PREFIX + "chunk-being-written")

    def a_writing_a_chunk():
        with open(partial, "wb") as f:
            f.write(b"half a chunk")

    _, a, b = run_both(tiny, prefix, tmp_path, monkeypatch, during_a_pause=a_writing_a_chunk)
    assert isinstance(b, LeaseHeldError), b
    assert os.path.exists(partial)


def test_a_finished_shard_is_reused_by_a_second_run_without_a_lease(tiny, prefix, tmp_path):
    """Sharing a prefix one run after the other is safe: the second finds the manifest and
    reuses the shard (a reader: it takes no lease)."""
    shard = shard_on(prefix, tmp_path)
    out = storage.join(prefix, "features")
    first = extract_shard(shard, out, tiny, ExtractSettings(batch_size=4, device="cpu", run_id="run-a"), "cpu")
    second = extract_shard(shard, out, tiny, ExtractSettings(batch_size=3, device="cpu", run_id="run-b"), "cpu")
    assert second.objects == first.objects
    assert not storage.exists(storage.join(out, "two-000000", LEASE_NAME))


def test_two_runs_at_once_leave_features_that_read_back_intact(tiny, prefix, tmp_path, monkeypatch):
    """What the users saw: whichever run wrote its manifest last, the features under the shared
    prefix must pass their checksums (before the lease, chunk-00000 of run A was overwritten by
    run B's and A's manifest, written last, named A's digests: CorruptChunkError on read)."""
    shard_dir, _, _ = run_both(tiny, prefix, tmp_path, monkeypatch)
    manifest = read_manifest(shard_dir)
    chunks = list(iter_feature_chunks(shard_dir))
    assert sorted(k for c in chunks for k in c.image_keys) == [f"img{i:05d}" for i in range(6)]
    assert manifest.image_count == 6


def lease_version(shard_dir: str):
    """What changes with every renewal: the S3 lease object's ETag, the local lease file's mtime."""
    uri = storage.join(shard_dir, LEASE_NAME)
    if not storage.exists(uri):
        return None
    return storage.s3_version(uri).etag if storage.is_s3(uri) else os.stat(uri).st_mtime_ns


def test_a_write_longer_than_the_lease_expiry_keeps_its_lease(tiny, prefix, tmp_path, monkeypatch):
    """The lease is renewed while a run writes: a chunk write that lasts more than twice the
    expiry (3 s here) still holds it, and a second run trying then is refused."""
    monkeypatch.setenv("LVERB_LEASE_S", "3")        # renewed every 0.5 s
    shard = shard_on(prefix, tmp_path)
    out = storage.join(prefix, "features")
    shard_dir = storage.join(out, "two-000000")
    real_write = extract_module.write_feature_chunk
    second = {}

    def long_first_write(uri, tensors, metadata):
        if not second:
            versions, deadline = set(), time.monotonic() + GUARD_S
            while len(versions - {None}) < 14 and time.monotonic() < deadline:   # 13 renewals: 6.5 s
                version = lease_version(shard_dir)
                if version is None:
                    break       # no lease while writing: nothing to wait for
                versions.add(version)
                time.sleep(0.05)
            second["renewals"] = len(versions - {None}) - 1
            try:
                second["result"] = extract_shard(shard, out, tiny, ExtractSettings(batch_size=3, device="cpu",
                                                                                   run_id="run-b"), "cpu")
            except Exception as e:
                second["result"] = e
        return real_write(uri, tensors, metadata)

    monkeypatch.setattr(extract_module, "write_feature_chunk", long_first_write)
    first = extract_shard(shard, out, tiny, ExtractSettings(batch_size=2, device="cpu", writers=1, run_id="run-a"), "cpu")
    assert second["renewals"] >= 13
    assert isinstance(second["result"], LeaseHeldError), second["result"]
    assert "run run-a on host" in str(second["result"])
    assert first.image_count == 6
    assert [k for c in iter_feature_chunks(shard_dir) for k in c.image_keys] == [f"img{i:05d}" for i in range(6)]
