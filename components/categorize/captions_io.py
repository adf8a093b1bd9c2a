"""Reading the captions to label: captions Parquet files of the data contract, or the
original study's ``{"layer_N": [captions...]}`` JSON (for ``--import-raw`` comparisons)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..common import storage
from ..common.contracts import CAPTIONS_SCHEMA
from ..common.tables import read_table


@dataclass(frozen=True)
class CaptionRow:
    layer: int
    caption: str
    image_key: str


_LAYER_KEY = re.compile(r"layer_(\d+)$")


def _read_study_json(uri: str) -> list[CaptionRow]:
    data = storage.read_json(uri)
    if not isinstance(data, dict) or not all(_LAYER_KEY.match(k) for k in data):
        raise ValueError(f"{uri}: a .json captions file must be the study's format {{\"layer_N\": [captions...]}}")
    rows = []
    for key in sorted(data, key=lambda k: int(_LAYER_KEY.match(k).group(1))):
        layer = int(_LAYER_KEY.match(key).group(1))
        rows += [CaptionRow(layer, str(c), str(i)) for i, c in enumerate(data[key])]
    return rows


def read_captions(uris: list[str]) -> list[CaptionRow]:
    """All caption rows of the given files (patterns allowed), in file and row order."""
    if not uris:
        raise ValueError("no captions given: pass --captions with one or more captions Parquet files")
    rows: list[CaptionRow] = []
    for pattern in uris:
        matched = storage.expand_pattern(pattern) if any(c in pattern for c in "*?[{") else [pattern]
        if not matched:
            raise FileNotFoundError(f"--captions {pattern!r} matches nothing: pass existing captions Parquet files")
        for uri in matched:
            if not storage.exists(uri):
                raise FileNotFoundError(f"captions file {uri!r} does not exist: pass the caption step's Parquet output")
            if uri.endswith(".json"):
                rows += _read_study_json(uri)
                continue
            t = read_table(uri, CAPTIONS_SCHEMA)
            rows += [CaptionRow(int(l), str(c), str(k)) for l, c, k in
                     zip(t.column("layer").to_pylist(), t.column("caption").to_pylist(), t.column("image_key").to_pylist())]
    return rows
