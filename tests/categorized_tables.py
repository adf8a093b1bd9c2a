"""The categorize step's two tables as it writes them, for report tests: labels and aggregate
with one set of parameters, and the label -> category map in the aggregate's metadata. The
aggregate is computed by the categorize step's own code (the report reads, never aggregates)."""

from __future__ import annotations

import pyarrow as pa

from latent_verbalizer.components.categorize.aggregate import aggregate
from latent_verbalizer.components.categorize.labelset import Part
from latent_verbalizer.components.common.contracts import (
    AGGREGATE_SCHEMA,
    LABELS_FORMAT,
    LABELS_SCHEMA,
    LABELS_VERSION,
)
from latent_verbalizer.components.common.tables import provenance, write_table

CATEGORY_MAP_KEY = "category_map"


def categorize_provenance(**overrides) -> dict:
    params = {"captions": ["captions.parquet"], "model": "llm", "labels": "labels.yaml", "merge": None,
              "gpus": None, "batch_size": "auto", "dtype": "auto", "import_raw": None}
    params.update(overrides)
    return provenance(**params)


def labels_table(entries: list[tuple[str, list[tuple[str, list[str]]], str]], model: str = "llm") -> pa.Table:
    """``entries``: (caption, [(part text, [labels])], status) per distinct caption."""
    return pa.table({
        "caption": [e[0] for e in entries],
        "parts": [[{"text": p, "labels": labs} for p, labs in e[1]] for e in entries],
        "model": [model] * len(entries), "status": [e[2] for e in entries],
    }, schema=LABELS_SCHEMA)


def write_categorized(out_dir: str, caption_rows: list[tuple[int, str]], labels: pa.Table,
                      category_map: dict[str, str], made_by: dict | None = None,
                      aggregate_made_by: dict | None = None) -> tuple[str, str]:
    """Write labels.parquet and aggregate.parquet under ``out_dir`` as categorize does;
    ``caption_rows``: (layer, caption) per captions row. Returns the two paths."""
    made_by = made_by or categorize_provenance()
    parts_of = {c: [Part(p["text"], tuple(p["labels"])) for p in parts]
                for c, parts in zip(labels.column("caption").to_pylist(), labels.column("parts").to_pylist())}
    status_of = dict(zip(labels.column("caption").to_pylist(), labels.column("status").to_pylist()))
    per_row = [(layer, parts_of.get(c), status_of.get(c, "no_parts")) for layer, c in caption_rows]
    labels_path, aggregate_path = f"{out_dir}/labels.parquet", f"{out_dir}/aggregate.parquet"
    write_table(labels_path, labels, LABELS_SCHEMA, LABELS_FORMAT, LABELS_VERSION, made_by)
    write_table(aggregate_path, aggregate(per_row, category_map), AGGREGATE_SCHEMA, LABELS_FORMAT + "/aggregate",
                LABELS_VERSION, dict(aggregate_made_by or made_by, **{CATEGORY_MAP_KEY: category_map}))
    return labels_path, aggregate_path
