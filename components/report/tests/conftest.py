"""Fixtures: the report's inputs built from the original study's real outputs."""

from __future__ import annotations

import json
import os

import pytest

from tests.images import shard_with_references
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


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (the browser tests are skipped where it is not installed)."""
    from tests.headless_chromium import Chromium

    with Chromium() as b:
        yield b


@pytest.fixture(scope="session")
def reference_shards(reference_dir, tmp_path_factory):
    """Two shards holding the first 24 reference images, with pseudo-references (the last two
    layers' captions of each image: the real MSCOCO references are not in the reference data)."""
    caps = json.loads((reference_dir / "caps_batch0.json").read_text())
    root = tmp_path_factory.mktemp("shards")
    keys = [f"{i:06d}" for i in range(24)]
    refs = {k: [caps["layer_23"][i], caps["layer_22"][i]] for i, k in enumerate(keys)}
    real = str(reference_dir / "COCO_val2014_000000560744.jpg")
    shard_with_references(os.path.join(root, "shard-000000.tar"), keys[:12], refs, None)
    shard_with_references(os.path.join(root, "shard-000001.tar"), keys[12:], refs, real)
    return {"pattern": os.path.join(root, "shard-{000000..000001}.tar"), "keys": keys, "references": refs}


@pytest.fixture(scope="session")
def reference_report(reference_tables, reference_shards, tmp_path_factory):
    """The report built from the reference tables, with thumbnails for the first 24 images."""
    from latent_verbalizer.components.report.single.report import build_report

    out = str(tmp_path_factory.mktemp("report"))
    result = build_report([reference_tables["captions"]], reference_tables["labels"], reference_tables["aggregate"],
                          out, reference_shards["pattern"])
    return out, result
