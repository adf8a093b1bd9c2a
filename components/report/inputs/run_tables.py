"""Find a finished run's tables under its storage prefix (a folder or an ``s3://`` prefix).

A run writes everything under one prefix (``<storage_root>/<run id>``, the shared
``storage_prefix``, or ``runs/<timestamp>/data`` for ``lverb run --local``)::

    <prefix>/captions/<shard>/captions.parquet   (+ manifest.json, written last: the shard is done)
    <prefix>/labels/labels.parquet               the categorize step's labels
    <prefix>/labels/aggregate.parquet            and its per-layer shares (written with them)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ...common import storage
from ...common.contracts import MANIFEST_NAME

CAPTIONS_DIR, LABELS_DIR = "captions", "labels"
CAPTIONS_FILE, LABELS_FILE, AGGREGATE_FILE = "captions.parquet", "labels.parquet", "aggregate.parquet"
LOCAL_RUN_DATA = "data"  # lverb run --local writes bulk data under runs/<timestamp>/data


@dataclass
class RunTables:
    prefix: str                    # the storage prefix the tables were found under
    captions: list[str]            # one captions.parquet per finished shard
    labels: str
    aggregate: str
    unfinished_shards: list[str] = field(default_factory=list)  # captions without a manifest (left out)


def _has_captions(prefix: str) -> bool:
    return any(u.endswith("/" + CAPTIONS_FILE) or u.endswith(os.sep + CAPTIONS_FILE)
               for u in storage.list_uris(storage.join(prefix, CAPTIONS_DIR)))


def resolve_run_prefix(run: str, role: str) -> str:
    """The storage prefix of ``run``: the prefix itself, or for a local run's folder (``runs/<timestamp>``)
    the ``data`` folder inside it. ``role`` names the argument in errors (e.g. "RUN_B")."""
    run = run.strip()
    if not run:
        raise ValueError(f"{role}: empty; pass a run's storage prefix (a folder or s3://bucket/prefix)")
    if not storage.is_s3(run) and not os.path.isdir(storage.local_path(run)):
        raise FileNotFoundError(f"{role} {run}: no such folder; pass a run's storage prefix (the folder or s3:// prefix "
                                "holding its captions/ and labels/)")
    if _has_captions(run):
        return run
    local_data = storage.join(run, LOCAL_RUN_DATA)
    if not storage.is_s3(run) and os.path.isdir(storage.local_path(local_data)) and _has_captions(local_data):
        return local_data
    return run


def find_run_tables(run: str, role: str) -> RunTables:
    """The captions (finished shards), labels and aggregate tables of a run; an error naming ``role``, the
    run and what is missing when its caption or categorize step has not finished."""
    prefix = resolve_run_prefix(run, role)
    listed = storage.list_uris(storage.join(prefix, CAPTIONS_DIR))
    finished, unfinished = [], []
    for uri in listed:
        if storage.basename(uri) != CAPTIONS_FILE:
            continue
        shard_dir = uri[: -len(CAPTIONS_FILE) - 1]
        (finished if storage.join(shard_dir, MANIFEST_NAME) in listed else unfinished).append(uri)
    if not finished:
        raise FileNotFoundError(
            f"{role} {prefix} has no {CAPTIONS_DIR}/<shard>/{CAPTIONS_FILE} with its {MANIFEST_NAME}: its caption "
            f"step has not finished (or this is not a run's storage prefix){_unfinished_note(unfinished)}")
    tables = {}
    for name in (LABELS_FILE, AGGREGATE_FILE):
        uri = storage.join(prefix, LABELS_DIR, name)
        if not storage.exists(uri):
            raise FileNotFoundError(f"{role} {prefix} has no {LABELS_DIR}/{name}: its categorize step has not finished")
        tables[name] = uri
    return RunTables(prefix, finished, tables[LABELS_FILE], tables[AGGREGATE_FILE], unfinished)


def _unfinished_note(unfinished: list[str]) -> str:
    return f" ({len(unfinished)} shards have captions but no manifest yet)" if unfinished else ""
