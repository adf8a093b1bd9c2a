"""Captions tables for the categorize tests, given as captions per layer."""

from __future__ import annotations

import pyarrow as pa

from latent_verbalizer.components.common.contracts import CAPTIONS_FORMAT, CAPTIONS_SCHEMA, CAPTIONS_VERSION
from latent_verbalizer.components.common.tables import write_table


def write_captions(uri: str, captions_by_layer: dict[int, list[str]], shard: str = "shard-000") -> None:
    """A captions table at ``uri``: each layer's captions, one image each (keys img0000, img0001, ...)."""
    rows = [{"image_key": f"img{i:04d}", "shard": shard, "layer": layer, "caption": c, "token_ids": [1, 2],
             "n_tokens": 2, "stop": "eos", "entropy_bits": 1.0, "mean_logprob": -1.0}
            for layer, caps in captions_by_layer.items() for i, c in enumerate(caps)]
    write_table(uri, pa.Table.from_pylist(rows, schema=CAPTIONS_SCHEMA), CAPTIONS_SCHEMA, CAPTIONS_FORMAT, CAPTIONS_VERSION, {})
