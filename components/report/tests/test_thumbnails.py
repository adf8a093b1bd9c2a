"""Thumbnails and references come through the shared tar reader (components.common.tar_samples)."""

from __future__ import annotations

from latent_verbalizer.components.report.inputs.shard_images import read_shard_images
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


def test_an_unreadable_shard_is_recorded_and_the_others_read(tmp_path):
    bad = tmp_path / "s-000000.tar"
    bad.write_bytes(b"\x00garbage" * 100)
    write_tar(str(tmp_path / "s-000001.tar"), [("a.jpg", encode(random_rgb(), "JPEG")), ("a.txt", b"a thing")])
    images = read_shard_images(str(tmp_path / "s-{000000..000001}.tar"), {"a"}, thumbnail_px=32)
    assert set(images.thumbnails) == {"a"} and images.references == {"a": ["a thing"]}  # from the good shard
    ((shard, reason),) = images.unreadable_shards
    assert shard == str(bad) and reason.startswith(f"{bad} is not a tar archive")
    # shards the pipeline already recorded as failed are not read at all
    assert read_shard_images(str(tmp_path / "s-{000000..000001}.tar"), {"a"}, skip_shards={str(bad)}).unreadable_shards == []
