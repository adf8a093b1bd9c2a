"""Keys that ``lverb shards`` writes: unique per dataset, collisions renamed and named."""

from __future__ import annotations

import json
import logging

from latent_verbalizer.components.common.tar_samples import iter_samples
from latent_verbalizer.components.extract.shards import sample_key
from latent_verbalizer.pipeline.cli import main as lverb
from tests.images import encode, random_rgb


def _image(path, seed, fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(random_rgb(seed=seed), fmt))
    return path.read_bytes()


def _samples(folder):
    return {s.key: s for shard in sorted(folder.glob("*.tar")) for s in iter_samples(str(shard), [])}


def test_same_name_in_two_folders_keeps_both_images(tmp_path):
    src = tmp_path / "images"
    a, b = _image(src / "a" / "1.jpg", 1), _image(src / "b" / "1.jpg", 2)
    _image(src / "top.jpg", 3)
    assert lverb(["shards", str(src), str(tmp_path / "out"), "--per-shard", "2"]) == 0
    samples = _samples(tmp_path / "out")
    assert sorted(samples) == ["a/1", "b/1", "top"]
    assert samples["a/1"].image_bytes()[1] == a and samples["b/1"].image_bytes()[1] == b
    assert json.loads(samples["b/1"].files["json"])["filename"] == "b/1.jpg"


def test_keys_that_collide_after_cleaning_are_renamed_and_named(tmp_path, caplog):
    src = tmp_path / "images"
    dotted, plain = _image(src / "img.1.jpg", 1), _image(src / "img_1.jpg", 2)
    png = _image(src / "img_1.png", 3, "PNG")
    with caplog.at_level(logging.WARNING):
        assert lverb(["shards", str(src), str(tmp_path / "out")]) == 0
    samples = _samples(tmp_path / "out")
    assert len(samples) == 3
    # sorted file order: img.1.jpg keeps the key, the others get -2, -3
    assert samples["img_1"].image_bytes()[1] == dotted
    assert samples["img_1-2"].image_bytes()[1] == plain
    assert samples["img_1-3"].image_bytes()[1] == png
    warned = "\n".join(r.getMessage() for r in caplog.records)
    assert "img_1.jpg -> key 'img_1-2' ('img_1' is img.1.jpg)" in warned
    assert "img_1.png -> key 'img_1-3'" in warned


def test_a_renamed_key_never_takes_an_existing_one(tmp_path):
    src = tmp_path / "images"
    for i, name in enumerate(["x.jpg", "x.png", "x-2.jpg"]):
        _image(src / name, i, "PNG" if name.endswith("png") else "JPEG")
    assert lverb(["shards", str(src), str(tmp_path / "out")]) == 0
    assert sorted(_samples(tmp_path / "out")) == ["x", "x-2", "x-3"]


def test_sample_key_is_safe_for_webdataset():
    assert sample_key("/data/set/a.b/c d.e.jpg", "/data/set") == "a_b/c_d_e"
    assert sample_key("/data/set/photo.jpeg") == "photo"
