"""The one S3 download cache (``components.common.download_cache``): objects and prefixes
copied once under ``$LVERB_MODEL_CACHE``, and no object key written outside its folder."""

from __future__ import annotations

import os

import pytest

from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.download_cache import (
    CACHE_ENV,
    download_object,
    download_prefix,
    safe_local_path,
)


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
    """Both loaders that read s3:// (CoCa weights in common/models.py, the LLM folder in
    categorize) copy into the one ``$LVERB_MODEL_CACHE``."""
    from latent_verbalizer.components.categorize.llm_loader import resolve_model_source
    from latent_verbalizer.components.common.models import resolve_weights

    storage.write_bytes(f"{s3_bucket}/coca/open_clip_model.safetensors", b"weights")
    storage.write_bytes(f"{s3_bucket}/llm/config.json", b"{}")
    weights = resolve_weights(f"{s3_bucket}/coca/open_clip_model.safetensors")
    folder = resolve_model_source(f"{s3_bucket}/llm")
    assert weights.startswith(str(cache) + os.sep) and folder.startswith(str(cache) + os.sep)
    assert open(weights, "rb").read() == b"weights" and os.listdir(folder) == ["config.json"]
