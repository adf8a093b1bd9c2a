"""Read the report's inputs (captions, labels, aggregate tables; any storage URI) and check them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pyarrow as pa

from ..common import storage
from ..common.contracts import (
    AGGREGATE_SCHEMA,
    CAPTIONS_SCHEMA,
    LABELS_SCHEMA,
    read_table,
    table_metadata,
)

log = logging.getLogger("lverb.report")


@dataclass
class ReportInputs:
    captions: pa.Table                      # CAPTIONS_SCHEMA, every file concatenated
    labels: pa.Table | None                 # LABELS_SCHEMA (None: not given)
    aggregate: pa.Table | None              # AGGREGATE_SCHEMA (None: not given)
    sources: dict[str, list[str]] = field(default_factory=dict)      # role -> URIs read
    provenance: dict[str, list[dict]] = field(default_factory=dict)  # role -> metadata of each file


def resolve_uris(uris: list[str] | str, role: str) -> list[str]:
    """Files named by URIs, brace/glob patterns or folders (every ``*.parquet`` below)."""
    if isinstance(uris, str):
        uris = [uris]
    out: list[str] = []
    for uri in uris:
        if any(ch in uri for ch in "*?[{"):
            found = storage.expand_pattern(uri)
            if not found:
                raise FileNotFoundError(f"--{role} {uri}: the pattern matches nothing; check the path or pattern")
            out.extend(found)
        elif storage.exists(uri) and not _is_local_dir(uri):
            out.append(uri)
        else:
            listed = [u for u in _list(uri) if u.endswith(".parquet")]
            if not listed:
                raise FileNotFoundError(
                    f"--{role} {uri}: no such file, and no .parquet files under it; "
                    f"pass the {role} Parquet written by the previous step"
                )
            out.extend(listed)
    return list(dict.fromkeys(out))


def _is_local_dir(uri: str) -> bool:
    import os

    return not storage.is_s3(uri) and os.path.isdir(storage.local_path(uri))


def _list(uri: str) -> list[str]:
    import os

    if storage.is_s3(uri):
        return storage.list_uris(uri)
    if os.path.isdir(storage.local_path(uri)):
        return storage.list_uris(uri)
    return []


def _read(uri: str, schema: pa.Schema, role: str) -> tuple[pa.Table, dict]:
    """A contract table and its provenance metadata.

    (``contracts.read_table(uri, schema)`` casts to the bare schema, which drops the
    metadata, so the table is read raw first and checked/cast here.)
    """
    try:
        raw = read_table(uri)
    except pa.ArrowInvalid as e:
        raise ValueError(f"--{role} {uri}: not a readable Parquet file ({e}); pass the {role} table") from e
    meta = table_metadata(raw)
    missing = [n for n in schema.names if n not in raw.column_names]
    if missing:
        raise ValueError(f"--{role} {uri}: not a {role} table of the data contract, missing columns {missing}")
    return raw.select(schema.names).cast(schema), meta


def load_inputs(captions_uris: list[str] | str, labels_uri: str | None, aggregate_uri: str | None) -> ReportInputs:
    if not captions_uris:
        raise ValueError("--captions: no captions tables given; pass the Parquet files of the caption step")
    cap_files = resolve_uris(captions_uris, "captions")
    read = [_read(u, CAPTIONS_SCHEMA, "captions") for u in cap_files]
    tables = [t for t, _ in read]
    captions = pa.concat_tables(tables) if tables else CAPTIONS_SCHEMA.empty_table()
    if captions.num_rows == 0:
        raise ValueError(
            f"--captions {', '.join(cap_files)}: no caption rows at all; the caption step wrote empty "
            "tables (no images in the shards, or every sample skipped: see its logs and manifests)"
        )
    prov = {"captions": [m for _, m in read]}
    sources = {"captions": cap_files}

    labels = aggregate = None
    if labels_uri:
        (lf,) = _single(labels_uri, "labels")
        labels, meta = _read(lf, LABELS_SCHEMA, "labels")
        prov["labels"] = [meta]
        sources["labels"] = [lf]
    if aggregate_uri:
        (af,) = _single(aggregate_uri, "aggregate")
        aggregate, meta = _read(af, AGGREGATE_SCHEMA, "aggregate")
        prov["aggregate"] = [meta]
        sources["aggregate"] = [af]
    log.info(
        "report inputs: %d caption rows from %d files%s%s", captions.num_rows, len(cap_files),
        f", {labels.num_rows} labelled captions" if labels is not None else "",
        f", {aggregate.num_rows} aggregate rows" if aggregate is not None else "",
    )
    return ReportInputs(captions, labels, aggregate, sources, prov)


def _single(uri: str, role: str) -> list[str]:
    files = resolve_uris(uri, role)
    if len(files) != 1:
        raise ValueError(f"--{role} {uri}: names {len(files)} files; pass exactly one {role} table")
    return files
