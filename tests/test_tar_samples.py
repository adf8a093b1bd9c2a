"""The one webdataset tar reader (components.common.tar_samples), used by extract and report."""

from __future__ import annotations

import pytest

from latent_verbalizer.components.common.tar_samples import ShardError, iter_samples, split_key
from tests.images import encode, random_rgb, write_tar


def test_key_rule_is_webdatasets():
    import webdataset as wds

    names = ["a.jpg", "dir/a.b.JPG", "d.x/img.json", "a..jpg", "noext", "dir/.hidden"]
    members = [(n, n.encode()) for n in names]
    for name in names:
        want = wds.tariterators.base_plus_ext(name)
        got = split_key(name)
        assert got == (None if want[0] is None else (want[0], want[1].lower())), name
    # webdataset's own grouping of the same names gives the same keys
    grouped = list(wds.tariterators.group_by_keys(iter({"fname": n, "data": d, "__url__": "s.tar"} for n, d in members)))
    assert [g["__key__"] for g in grouped] == ["a", "dir/a", "d.x/img", "a", "dir/"]


def test_samples_grouped_and_odd_files_recorded(tmp_path):
    jpg = encode(random_rgb(), "JPEG")
    shard = write_tar(str(tmp_path / "s.tar"), [
        ("one.jpg", jpg), ("one.json", b'{"captions": ["x"]}'),
        ("README", b"no extension"),               # part of no sample: recorded, not a sample
        ("two.caption.txt", b"a"), ("two.PNG", encode(random_rgb(), "PNG")),
        ("three.json", b"{}"),                     # no image
    ])
    skipped = []
    samples = list(iter_samples(shard, skipped))
    assert [(s.key, sorted(s.files)) for s in samples] == [("one", ["jpg", "json"]), ("two", ["caption.txt", "png"])]
    reasons = {s.key: s.reason for s in skipped}
    assert "without an extension" in reasons["README"] and "no image" in reasons["three"]


def test_broken_archive_names_the_shard(tmp_path):
    bad = tmp_path / "bad-000001.tar"
    bad.write_bytes(b"not a tar archive at all" * 50)
    with pytest.raises(ShardError, match="bad-000001.tar is not a tar archive"):
        list(iter_samples(str(bad), []))


def test_a_file_over_the_member_cap_skips_its_sample_unread(tmp_path):
    big = encode(random_rgb((320, 240), seed=1), "PNG")
    shard = write_tar(str(tmp_path / "s.tar"), [
        ("one.jpg", encode(random_rgb(), "JPEG")),
        ("big.json", b"{}"), ("big.png", big),       # the image over the cap: the whole sample goes
        ("two.jpg", encode(random_rgb(), "JPEG")), ("two.txt", b"x" * 5000),  # any file over the cap
        ("three.jpg", encode(random_rgb(), "JPEG")),
    ])
    skipped = []
    samples = list(iter_samples(shard, skipped, max_member_bytes=4096))
    assert [s.key for s in samples] == ["one", "three"]
    assert [(s.key, s.reason) for s in skipped] == [
        ("big", f"big.png is {len(big):,} bytes, over the 4,096-byte cap on one file of a sample; "
                "shrink or leave out that file"),
        ("two", "two.txt is 5,000 bytes, over the 4,096-byte cap on one file of a sample; shrink or leave out that file"),
    ]
