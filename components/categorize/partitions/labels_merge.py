"""The labels tables of several partitions (each a row per distinct caption of its share of the
captions) as the one labels table of the contract, streamed: one Parquet batch in memory at a
time, whatever the number of captions."""

from __future__ import annotations

import json
from typing import Sequence

import pyarrow.parquet as pq

from ...common import storage
from ...common.contracts import LABELS_FORMAT, LABELS_SCHEMA, LABELS_VERSION
from ..aggregate import iter_table_batches


def merge_label_tables(labels_uris: Sequence[str], out_uri: str, made_by: dict) -> int:
    """Write the rows of ``labels_uris``, in their order, as one LABELS_SCHEMA table at ``out_uri``
    (with ``made_by`` in its metadata, as ``tables.write_table`` writes it); returns the rows.
    Partitions split the captions by caption, so no caption is in two of the tables."""
    schema = LABELS_SCHEMA.with_metadata(
        {b"latent_verbalizer": json.dumps({"format": LABELS_FORMAT, "version": LABELS_VERSION, **made_by}).encode()})
    rows = 0
    with storage.open_write(out_uri) as f, pq.ParquetWriter(f, schema, compression="zstd") as writer:
        for uri in labels_uris:
            for batch in iter_table_batches(uri, LABELS_SCHEMA.names, "labels"):
                writer.write_batch(batch.cast(schema))
                rows += batch.num_rows
    return rows
