"""Finished runs laid out as the pipeline leaves them under a storage prefix (test helper):
``captions/<shard>/captions.parquet`` + ``manifest.json``, ``labels/labels.parquet`` and
``labels/aggregate.parquet`` (the aggregate computed by the categorize step's own code)."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc

from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.contracts import CAPTIONS_FORMAT, CAPTIONS_SCHEMA, CAPTIONS_VERSION
from latent_verbalizer.components.common.tables import provenance, read_table, write_table
from tests.categorized_tables import labels_table, write_categorized

BLIP_NUMBERING = {"scheme": "BLIP vision encoder layer, 1-based", "normal_layer": 11}


def blip_parameters(n_layers: int = 12, precision: str = "bfloat16") -> dict:
    """Caption parameters as the lead's BLIP path records them: family and layer numbering."""
    return {"model": "hf:tiny-blip", "pretrained": "", "precision": precision, "model_family": "hf-blip",
            "layer_numbering": {"n_layers": n_layers, "normal_layer": n_layers - 1, "scheme": BLIP_NUMBERING["scheme"],
                                "labels": [f"encoder layer {k + 1}" for k in range(n_layers)]}}


def write_captions(prefix: str, table: pa.Table, parameters: dict) -> list[str]:
    """One captions.parquet (+ manifest.json, written last) per shard of ``table``; returns the Parquet URIs."""
    written = []
    for shard in dict.fromkeys(table.column("shard").to_pylist()):
        part = table.filter(pc.equal(table.column("shard"), shard))
        shard_dir = storage.join(prefix, "captions", shard)
        uri = storage.join(shard_dir, "captions.parquet")
        write_table(uri, part, CAPTIONS_SCHEMA, CAPTIONS_FORMAT, CAPTIONS_VERSION, provenance(**parameters))
        storage.write_json(storage.join(shard_dir, "manifest.json"),
                           {"format": CAPTIONS_FORMAT, "version": CAPTIONS_VERSION, "shard": shard,
                            "captions": "captions.parquet", "rows": part.num_rows, "parameters": parameters})
        written.append(uri)
    return written


def write_labels(prefix: str, captions: pa.Table, entries, category_map: dict[str, str]) -> tuple[str, str]:
    """labels.parquet and aggregate.parquet under <prefix>/labels, as the categorize step writes them.
    ``entries``: (caption, [(part text, [labels])], status) per distinct caption, or a labels table."""
    out = storage.join(prefix, "labels")
    if not storage.is_s3(out):
        os.makedirs(out, exist_ok=True)
    labels = entries if isinstance(entries, pa.Table) else labels_table(entries)
    rows = list(zip(captions.column("layer").to_pylist(), captions.column("caption").to_pylist()))
    return write_categorized(out, rows, labels, category_map)


def captions_of_run(prefix: str) -> pa.Table:
    """Every captions table under a run's prefix, concatenated (for labelling a run the caption step made)."""
    uris = [u for u in storage.list_uris(storage.join(prefix, "captions")) if u.endswith("captions.parquet")]
    return pa.concat_tables([read_table(u, CAPTIONS_SCHEMA).replace_schema_metadata(None) for u in uris])


def caption_rows(rows: list[tuple[str, int, str]], entropy: float = 3.0, shard: str = "s0") -> pa.Table:
    """A captions table of (image key, layer, caption) rows; entropy ``entropy + layer``."""
    return pa.table({
        "image_key": [r[0] for r in rows], "shard": [shard] * len(rows), "layer": [r[1] for r in rows],
        "caption": [r[2] for r in rows], "token_ids": [[1, 2, 3]] * len(rows), "n_tokens": [3] * len(rows),
        "stop": ["eos"] * len(rows), "entropy_bits": [entropy + r[1] for r in rows],
        "mean_logprob": [-1.0] * len(rows),
    }, schema=CAPTIONS_SCHEMA)
