"""An image key found in two shards: both images stay in the report, and the report says which."""

from __future__ import annotations

import pyarrow as pa

from latent_verbalizer.components.common.contracts import CAPTIONS_SCHEMA
from latent_verbalizer.components.common.tables import provenance, write_table
from latent_verbalizer.components.report.single.report import build_report
from tests.images import shard_with_references
from tests.page_parsing import embedded_data


def _captions(path: str, shard: str, rows: list[tuple[str, int, str]]) -> str:
    t = pa.table({
        "image_key": [r[0] for r in rows], "shard": [shard] * len(rows), "layer": [r[1] for r in rows],
        "caption": [r[2] for r in rows], "token_ids": [[1, 2, 3]] * len(rows), "n_tokens": [3] * len(rows),
        "stop": ["eos"] * len(rows), "entropy_bits": [3.0] * len(rows), "mean_logprob": [-1.0] * len(rows),
    }, schema=CAPTIONS_SCHEMA)
    write_table(path, t, CAPTIONS_SCHEMA, "latent-verbalizer/captions", 1, provenance(model="m", precision="fp32"))
    return path


def test_a_key_in_two_shards_keeps_both_images_and_names_them(tmp_path):
    first = _captions(str(tmp_path / "a.parquet"), "shard-a",
                      [("1", 0, "a red ball"), ("1", 1, "a red ball on grass"), ("2", 0, "a dog"), ("2", 1, "a dog")])
    second = _captions(str(tmp_path / "b.parquet"), "shard-b", [("1", 0, "a blue car"), ("1", 1, "a blue car parked")])
    shard_with_references(str(tmp_path / "a.tar"), ["1", "2"], {"1": ["red"], "2": ["dog"]}, None)
    shard_with_references(str(tmp_path / "b.tar"), ["1"], {"1": ["blue"]}, None)
    r = build_report([first, second], None, None, str(tmp_path / "out"), str(tmp_path / "*.tar"))
    images = embedded_data(r.html)["images"]
    assert images["keys"] == ["1 (shard-a)", "2", "1 (shard-b)"]
    # no thumbnail or reference can be told apart for the colliding key: none rather than a wrong one
    assert images["thumbs"][0] == "" and images["thumbs"][2] == "" and images["thumbs"][1]
    assert images["refs"][0] == [] and images["refs"][1] == ["dog"]
    assert "1 image key appears in more than one shard: 1 in shard-a, shard-b" in r.html
    assert "not found in the shards" not in r.html
    assert "blue car parked" in r.html and "red ball on grass" in r.html
