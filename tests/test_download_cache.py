"""The one S3 download cache (``components.common.storage.download_cache``): objects and prefixes
copied once per version under ``$LVERB_MODEL_CACHE``, no object key written outside its
folder, and several processes filling one cache folder at once (pods on a shared volume)."""

from __future__ import annotations

import glob
import hashlib
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest
from safetensors.numpy import save

from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.storage.download_cache import (
    CACHE_ENV,
    LEASE_S,
    CachedFile,
    download_object,
    download_prefix,
    safe_local_path,
)
from tests import cache_writers

WRITERS = 6


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(root))
    return root


def _files_outside(root, tmp_path) -> list[str]:
    return [os.path.join(d, f) for d, _, fs in os.walk(tmp_path) for f in fs
            if not os.path.join(d, f).startswith(str(root) + os.sep)]


@pytest.mark.parametrize("key", ["../escape.json", "a/../../escape.json", "a//b.json", "/etc/escape.json",
                                 "./a.json", "a/./b.json", "..", "", "a\\..\\b.json"])
def test_unsafe_keys_are_refused(tmp_path, key):
    with pytest.raises(ValueError, match="outside the cache folder") as err:
        safe_local_path(str(tmp_path / "dest"), key, "s3://b/models/m")
    assert repr(key) in str(err.value) and "s3://b/models/m" in str(err.value)


def test_safe_keys_stay_inside(tmp_path):
    dest = str(tmp_path / "dest")
    assert safe_local_path(dest, "config.json", "s3://b/m") == os.path.join(dest, "config.json")
    assert safe_local_path(dest, "sub/dir/w.safetensors", "s3://b/m") == os.path.join(dest, "sub", "dir", "w.safetensors")
    assert safe_local_path(dest, "a..b.json", "s3://b/m") == os.path.join(dest, "a..b.json")   # dots inside a name are fine


def test_symlink_out_of_the_folder_is_refused(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", dest / "link")
    with pytest.raises(ValueError, match="resolves outside"):
        safe_local_path(str(dest), "link/x.json", "s3://b/m")


def test_prefix_with_a_hostile_key_writes_nothing(s3_bucket, cache, tmp_path, monkeypatch):
    """A listing that holds a key climbing out of the prefix (a server or bucket we do not
    control): the download refuses it before writing any file."""
    prefix = f"{s3_bucket}/models/m"
    storage.write_bytes(f"{prefix}/config.json", b"{}")
    real_list = storage.list_uris
    monkeypatch.setattr(storage, "list_uris", lambda p: real_list(p) + [f"{prefix}/../../../../escape.json"])
    with pytest.raises(ValueError, match="escape.json"):
        download_prefix(prefix, (".json",))
    assert not cache.exists() or not any(f for _, _, fs in os.walk(cache) for f in fs)
    assert _files_outside(cache, tmp_path) == []


def test_prefix_and_object_downloaded_once(s3_bucket, cache):
    prefix = f"{s3_bucket}/models/m"
    storage.write_bytes(f"{prefix}/config.json", b'{"a": 1}')
    storage.write_bytes(f"{prefix}/sub/model.safetensors", b"x" * 1000)
    storage.write_bytes(f"{prefix}/notes.bin", b"pickle would go here")
    dest = download_prefix(prefix, (".json", ".safetensors"))
    assert dest.startswith(str(cache))
    assert sorted(os.path.relpath(os.path.join(d, f), dest) for d, _, fs in os.walk(dest) for f in fs) == \
        ["config.json", os.path.join("sub", "model.safetensors")]
    mtime = os.path.getmtime(os.path.join(dest, "config.json"))
    assert download_prefix(prefix + "/", (".json", ".safetensors")) == dest        # same folder, nothing copied again
    assert os.path.getmtime(os.path.join(dest, "config.json")) == mtime
    storage.write_bytes(f"{s3_bucket}/weights/w.safetensors", b"w" * 10)
    path = download_object(f"{s3_bucket}/weights/w.safetensors")
    assert path.startswith(str(cache)) and open(path, "rb").read() == b"w" * 10


def test_coca_weights_and_llm_folders_share_the_cache(s3_bucket, cache):
    """Both loaders that read s3:// (CoCa weights in common/model_families/coca_loading.py, the LLM folder in
    categorize) copy into the one ``$LVERB_MODEL_CACHE``."""
    from latent_verbalizer.components.categorize.llm.model_source import resolve_model_source
    from latent_verbalizer.components.common.model_families.coca_loading import resolve_weights

    storage.write_bytes(f"{s3_bucket}/coca/open_clip_model.safetensors", b"weights")
    storage.write_bytes(f"{s3_bucket}/llm/config.json", b"{}")
    weights = resolve_weights(f"{s3_bucket}/coca/open_clip_model.safetensors")
    folder = resolve_model_source(f"{s3_bucket}/llm")
    assert weights.startswith(str(cache) + os.sep) and folder.startswith(str(cache) + os.sep)
    assert open(weights, "rb").read() == b"weights" and os.listdir(folder) == ["config.json"]


def _random_weights(seed: int, numel: int = 512 * 1024) -> tuple[bytes, dict[str, str]]:
    """A safetensors file of four random float32 tensors (8 MiB at the default size), and
    the hash of each tensor's bytes."""
    rng = np.random.default_rng(seed)
    tensors = {f"layer{i}.weight": rng.standard_normal(numel, dtype=np.float32) for i in range(4)}
    return save(tensors), {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in tensors.items()}


def test_writers_at_once_end_with_the_same_weights(s3_bucket, cache):
    """Several processes (pods on one ReadWriteMany volume) download the same model into one
    cache folder at the same moment: each ends with the complete file and the same tensors,
    and the weights are fetched once (the others wait for the lock and reuse the file)."""
    prefix = f"{s3_bucket}/models/m"
    data, tensors = _random_weights(0)
    storage.write_bytes(f"{prefix}/model.safetensors", data)
    storage.write_bytes(f"{prefix}/config.json", b"{}")
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(WRITERS), ctx.Queue()
    writers = [ctx.Process(target=cache_writers.download_and_load, args=(prefix, start, results))
               for _ in range(WRITERS)]
    for w in writers:
        w.start()
    try:
        ended = [results.get(timeout=180) for _ in writers]
    finally:
        for w in writers:
            w.join(timeout=30)
            if w.is_alive():
                w.kill()
    assert [e.get("error") for e in ended] == [None] * WRITERS
    assert {e["file"] for e in ended} == {hashlib.sha256(data).hexdigest()}
    assert all(e["tensors"] == tensors for e in ended)
    assert len({e["inode"] for e in ended}) == 1                 # one file, not replaced under a reader
    assert sum(e["downloaded"] for e in ended) == 2               # model.safetensors and config.json, once each
    assert glob.glob(os.path.join(cache, "download-state", "*.partial-*")) == []


def test_a_changed_object_is_downloaded_again(s3_bucket, cache):
    """A new version of an object (new ETag, same size) replaces the cached copy; the same
    version is not fetched again."""
    uri = f"{s3_bucket}/coca/w.safetensors"
    storage.write_bytes(uri, b"a" * 100)
    path = download_object(uri)
    inode = os.stat(path).st_ino
    assert download_object(uri) == path and os.stat(path).st_ino == inode      # same version: reused
    storage.write_bytes(uri, b"b" * 100)
    assert download_object(uri) == path
    assert open(path, "rb").read() == b"b" * 100


def test_a_file_replaced_after_its_record_is_not_trusted(s3_bucket, cache):
    """A file of the right size whose record is not its own (replaced by another writer, or
    left by an older version of this code: a valid header with zeroed tensors) is downloaded
    again, not loaded."""
    prefix = f"{s3_bucket}/models/m"
    data, _ = _random_weights(1, numel=1024)
    storage.write_bytes(f"{prefix}/model.safetensors", data)
    path = os.path.join(download_prefix(prefix), "model.safetensors")
    header = 8 + int.from_bytes(data[:8], "little")
    torn = path + ".elsewhere"
    with open(torn, "wb") as f:
        f.write(data[:header] + bytes(len(data) - header))
    os.replace(torn, path)
    download_prefix(prefix)
    assert open(path, "rb").read() == data


def test_files_gone_from_the_prefix_leave_the_folder(s3_bucket, cache):
    """The folder of a prefix holds what the prefix holds now: a single-file model re-uploaded
    as shards leaves no stale ``model.safetensors`` beside them (transformers would load it),
    nor a ``.partial`` of an older writer. A download of fewer suffixes keeps the other files."""
    prefix = f"{s3_bucket}/models/m"
    storage.write_bytes(f"{prefix}/config.json", b"{}")
    storage.write_bytes(f"{prefix}/model.safetensors", b"old")
    folder = download_prefix(prefix, (".json", ".safetensors"))
    with open(os.path.join(folder, "model.safetensors.partial"), "wb") as f:    # the former code's partial name
        f.write(b"\0" * 10)
    assert sorted(os.listdir(download_prefix(prefix, ("config.json",)))) == \
        ["config.json", "model.safetensors"]                # the weights are still listed: kept; the partial is not
    storage.delete(f"{prefix}/model.safetensors")
    storage.write_bytes(f"{prefix}/model-00001-of-00001.safetensors", b"new")
    storage.write_bytes(f"{prefix}/model.safetensors.index.json", b"{}")
    assert download_prefix(prefix, (".json", ".safetensors")) == folder
    assert sorted(os.listdir(folder)) == ["config.json", "model-00001-of-00001.safetensors",
                                          "model.safetensors.index.json"]
    assert not os.path.exists(CachedFile.at(os.path.join(folder, "model.safetensors")).record)


def test_a_writer_killed_mid_download_blocks_nothing(s3_bucket, cache):
    """A writer killed while it held the lock and wrote its partial file (a pod killed
    mid-download): the next writer takes the lock over, downloads the object and never uses
    the partial file, which it removes once it has been untouched for the lease time."""
    uri = f"{s3_bucket}/coca/w.safetensors"
    v1, v2, v3 = (_random_weights(seed, numel=1024)[0] for seed in (1, 2, 3))
    storage.write_bytes(uri, v1)
    path = download_object(uri)
    storage.write_bytes(uri, v2)
    ctx = multiprocessing.get_context("spawn")
    killed = ctx.Process(target=cache_writers.die_while_writing, args=(path, v2[:100]))
    killed.start()
    killed.join(timeout=60)
    assert killed.exitcode == -signal.SIGKILL
    cached = CachedFile.at(path)
    assert os.path.exists(cached.lock)                                          # its lock was left behind
    [partial] = glob.glob(cached.partial_prefix + "*")
    assert download_object(uri) == path and open(path, "rb").read() == v2
    assert os.path.exists(partial)                                              # recent: maybe a live writer's
    old = time.time() - LEASE_S - 1
    os.utime(partial, (old, old))
    storage.write_bytes(uri, v3)
    assert download_object(uri) == path and open(path, "rb").read() == v3
    assert not os.path.exists(partial)
