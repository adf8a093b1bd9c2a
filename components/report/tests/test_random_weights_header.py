"""A report made from random weights says so in its header and its Markdown summary."""

from __future__ import annotations

from html import unescape

import pyarrow as pa

from latent_verbalizer.components.common.contracts import CAPTIONS_SCHEMA
from latent_verbalizer.components.common.tables import provenance, write_table
from latent_verbalizer.components.report.single.report import build_report


def _captions(path: str, **made_by) -> str:
    t = pa.table({"image_key": ["k"], "shard": ["s"], "layer": [0], "caption": ["a dog"], "token_ids": [[1]],
                  "n_tokens": [1], "stop": ["eos"], "entropy_bits": [2.0], "mean_logprob": [-1.0]},
                 schema=CAPTIONS_SCHEMA)
    write_table(path, t, CAPTIONS_SCHEMA, "latent-verbalizer/captions", 1, provenance(precision="fp32", **made_by))
    return path


def _header(html: str) -> str:
    return unescape(html[html.index("<header>"):html.index("</header>")])


def test_random_weights_are_named_in_the_header(tmp_path):
    for name, made_by in (("tiny", {"model": "tiny-random-coca", "pretrained": "random"}),
                          ("arch", {"model": "coca_ViT-B-32", "pretrained": "random"}),
                          ("hf", {"model": "tiny-random-blip", "pretrained": "random"})):
        r = build_report([_captions(str(tmp_path / f"{name}.parquet"), **made_by)], None, None, str(tmp_path / name))
        expected = f"RANDOM WEIGHTS: {made_by['model']} / random is an untrained model"
        assert expected in _header(r.html), name
        assert f"**{expected}" in r.markdown


def test_trained_weights_carry_no_such_note(tmp_path):
    caps = _captions(str(tmp_path / "c.parquet"), model="coca_ViT-L-14", pretrained="mscoco_finetuned_laion2B-s13B-b90k")
    r = build_report([caps], None, None, str(tmp_path / "out"))
    assert "RANDOM WEIGHTS" not in r.html and "RANDOM WEIGHTS" not in r.markdown
