"""Parquet tables of the data contracts (``contracts``) on any storage URI, with what made them
(``provenance``) in each file's footer, and the digest a re-run compares its inputs by."""

from __future__ import annotations

import hashlib
import json
import platform

import pyarrow as pa

from . import storage
from .version import __version__


def fingerprint(obj) -> str:
    """A short, stable digest of a JSON-able object (e.g. an input's manifest): the identity a
    re-run compares to tell whether what a step consumed has changed."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()[:16]


def provenance(**params) -> dict:
    """What made an output: package version, Python, and the parameters given."""
    return {
        "package": "latent-verbalizer",
        "package_version": __version__,
        "python": platform.python_version(),
        "parameters": params,
    }


def write_table(uri: str, table: pa.Table, schema: pa.Schema, fmt: str, version: int, made_by: dict) -> None:
    """Write a Parquet table of a contract, with what made it in the file's metadata."""
    import pyarrow.parquet as pq

    table = table.cast(schema)
    meta = dict(table.schema.metadata or {})
    meta[b"latent_verbalizer"] = json.dumps({"format": fmt, "version": version, **made_by}).encode()
    table = table.replace_schema_metadata(meta)
    with storage.open_write(uri) as f:
        pq.write_table(table, f, compression="zstd")


def read_table(uri: str, schema: pa.Schema | None = None) -> pa.Table:
    """Read a Parquet table (any storage URI); with ``schema``, check it has the contract's columns."""
    import pyarrow.parquet as pq

    with storage.open_read(uri) as f:
        table = pq.read_table(pa.BufferReader(f.read()))
    if schema is not None:
        missing = [n for n in schema.names if n not in table.column_names]
        if missing:
            raise ValueError(f"{uri}: not a table of this contract, missing columns {missing}")
        meta = table.schema.metadata
        table = table.select(schema.names).cast(schema).replace_schema_metadata(meta)
    return table


def table_metadata(table: pa.Table) -> dict:
    raw = (table.schema.metadata or {}).get(b"latent_verbalizer")
    return json.loads(raw) if raw else {}
