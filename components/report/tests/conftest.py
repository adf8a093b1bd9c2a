"""Fixtures: the report's inputs built from the original study's real outputs."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from tests.reference_tables import REFERENCE, reference_available


@pytest.fixture(scope="session")
def reference_dir():
    if not reference_available():
        pytest.skip(f"reference data missing at {REFERENCE} (the study's outputs, ../shared/reference)")
    return REFERENCE


@pytest.fixture(scope="session")
def reference_tables(reference_dir, tmp_path_factory):
    """captions / labels / aggregate Parquet of the 500 reference images x 24 layers."""
    from tests.reference_tables import write_reference_tables

    return write_reference_tables(str(tmp_path_factory.mktemp("reference-tables")))


def make_shard(path: str, keys: list[str], references: dict[str, list[str]], real_jpg: str | None) -> str:
    """A webdataset tar: key.jpg + key.json; the real COCO photo (a real JPEG to decode; it is not
    the photo these captions describe) for the last key, drawn pictures for the others."""
    from PIL import Image, ImageDraw

    with tarfile.open(path, "w") as tar:
        for n, key in enumerate(keys):
            if n == len(keys) - 1 and real_jpg:
                data = open(real_jpg, "rb").read()
            else:
                im = Image.new("RGB", (320, 240), (40 + 13 * n % 200, 90, 160 - 7 * n % 120))
                d = ImageDraw.Draw(im)
                d.ellipse((60 + n % 50, 40, 220, 200), fill=(230, 200 - 5 * n % 150, 40))
                d.rectangle((10, 150, 120, 230), fill=(20, 120 + 3 * n % 100, 60))
                buf = io.BytesIO()
                im.save(buf, "JPEG", quality=85)
                data = buf.getvalue()
            for name, payload in ((f"{key}.jpg", data),
                                  (f"{key}.json", json.dumps({"captions": references.get(key, [])}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.fixture(scope="session")
def reference_shards(reference_dir, tmp_path_factory):
    """Two shards holding the first 24 reference images, with pseudo-references (the last two
    layers' captions of each image: the real MSCOCO references are not in the reference data)."""
    caps = json.loads((reference_dir / "caps_batch0.json").read_text())
    root = tmp_path_factory.mktemp("shards")
    keys = [f"{i:06d}" for i in range(24)]
    refs = {k: [caps["layer_23"][i], caps["layer_22"][i]] for i, k in enumerate(keys)}
    real = str(reference_dir / "COCO_val2014_000000560744.jpg")
    make_shard(os.path.join(root, "shard-000000.tar"), keys[:12], refs, None)
    make_shard(os.path.join(root, "shard-000001.tar"), keys[12:], refs, real)
    return {"pattern": os.path.join(root, "shard-{000000..000001}.tar"), "keys": keys, "references": refs}


@pytest.fixture(scope="session")
def reference_report(reference_tables, reference_shards, tmp_path_factory):
    """The report built from the reference tables, with thumbnails for the first 24 images."""
    from latent_verbalizer.components.report.report import build_report

    out = str(tmp_path_factory.mktemp("report"))
    result = build_report([reference_tables["captions"]], reference_tables["labels"], reference_tables["aggregate"],
                          out, reference_shards["pattern"])
    return out, result
