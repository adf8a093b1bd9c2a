"""Thumbnails and references come through the shared tar reader (components.common.tar_samples)."""

from __future__ import annotations

import pytest

from latent_verbalizer.components.common.tar_samples import ShardError
from latent_verbalizer.components.report.thumbnails import read_shard_images
from tests.images import encode, random_rgb, write_tar


def test_thumbnails_and_references_by_webdataset_key(tmp_path):
    shard = write_tar(str(tmp_path / "s-000000.tar"), [
        ("sub/a.jpg", encode(random_rgb(), "JPEG")), ("sub/a.json", b'{"captions": ["a red thing", " "]}'),
        ("b.png", encode(random_rgb(), "PNG")), ("b.txt", b"a blue thing\n"),
        ("c.jpg", encode(random_rgb(), "JPEG")),
    ])
    images = read_shard_images(shard, {"sub/a", "b"}, thumbnail_px=32)
    assert set(images.thumbnails) == {"sub/a", "b"} and images.shards == [shard]
    assert images.references == {"sub/a": ["a red thing"], "b": ["a blue thing"]}


def test_a_broken_shard_is_named(tmp_path):
    bad = tmp_path / "broken-000000.tar"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ShardError, match="broken-000000.tar is not a tar archive"):
        read_shard_images(str(bad), {"a"})
