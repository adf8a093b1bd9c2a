"""The labelling's last step when it is split in partitions: one labels table, one aggregate.

Each partition's categorize task wrote the labels of its own captions under
``<labels>/partition-NNN-of-MMM/labels.parquet``. ``merge_partitions`` checks them, copies them
into ``<labels>/labels.parquet`` (partition after partition) and counts ``<labels>/aggregate.parquet``
from every caption row against them, streamed: its memory is a lookup of the distinct captions
(about 75 bytes each) and one batch, not the rows (benchmarks/RESULTS.md, "Scale"). The aggregate
and every label do not depend on the number of partitions; the labels table's row order does
(partition, then first occurrence).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from ...common import storage
from ...common.contracts import AGGREGATE_SCHEMA, LABELS_FORMAT, LABELS_META_ANSWER_SCHEMAS, LABELS_VERSION
from ...common.storage.write_lease import WriteLease
from ...common.tables import provenance, write_table
from ..aggregate import aggregate_files, iter_table_batches, table_metadata_of
from ..categorize import AGGREGATE_NAME, LABELS_NAME, SUMMARY_NAME, aggregate_metadata, answer_schemas
from ..labelset import load_labelset
from ..merge_table import load_merge_table
from .labels_merge import merge_label_tables
from .split import Partition, all_partitions

log = logging.getLogger(__name__)

# parameters a partition's tables record that differ between partitions by design
PER_PARTITION = ("partition",)


def partition_labels(labels_uri: str, partition: Partition) -> tuple[str, dict]:
    """``(the partition's labels table, its provenance)``, checked: an error naming the partition
    and the fix when its task has not finished, its table was written as another partition, or it
    holds a caption of another partition (a folder written with another partition count). The
    captions are read a batch at a time, never the whole table."""
    uri = storage.join(partition.folder(labels_uri), LABELS_NAME)
    if not storage.exists(uri):
        raise FileNotFoundError(f"{partition.name} has no labels table ({uri}): its categorize task did not finish. "
                                "Retry the run: finished partitions are not labelled again, an interrupted one "
                                "resumes from its answer store")
    made_by = table_metadata_of(uri)
    if made_by.get("parameters", {}).get("partition") != partition.name:
        raise ValueError(f"{uri} was not written as {partition.name} (its metadata says "
                         f"{made_by.get('parameters', {}).get('partition')!r}): a labels folder of another run")
    for batch in iter_table_batches(uri, ["caption"], "labels"):
        stray = next((c for c in batch.column("caption").to_pylist() if not partition.holds(c)), None)
        if stray is not None:
            raise ValueError(f"{partition.name} holds the caption {stray!r} of another partition: its folder was "
                             f"written with another partition count; give it a storage prefix of its own")
    return uri, made_by


def distinct_captions(uris: list[str]) -> Iterator[str]:
    """The captions of the partitions' labels tables, a batch at a time."""
    for uri in uris:
        for batch in iter_table_batches(uri, ["caption"], "labels"):
            yield from batch.column("caption").to_pylist()


def merged_parameters(partition_params: list[dict], count: int) -> dict:
    """The parameters every partition was labelled with (one set: they must agree), with the count."""
    first = {k: v for k, v in partition_params[0].items() if k not in PER_PARTITION}
    for i, params in enumerate(partition_params[1:], start=1):
        differing = sorted(k for k in first.keys() | params.keys()
                           if k not in PER_PARTITION and first.get(k) != params.get(k))
        if differing:
            raise ValueError(f"partitions 1 and {i + 1} of {count} were labelled with other parameters "
                             f"({', '.join(f'{k}: {first.get(k)!r} vs {params.get(k)!r}' for k in differing[:4])}): "
                             "label every partition of one run with the same settings")
    return dict(first, partitions=count)


def merge_partitions(captions_uris: list[str], labels_uri: str, count: int, run_id: str = "") -> dict:
    """Write ``labels.parquet`` and ``aggregate.parquet`` under ``labels_uri`` from the ``count``
    partitions' labels tables; returns a summary (also ``summary.json``).

    Streamed (pyarrow batches), so the step's memory does not grow with the caption rows: the
    labels tables are copied into one (``labels_merge``), partition after partition, each in its
    own order (first occurrence in the captions); the aggregate is counted from the captions
    tables against a lookup of the distinct captions (``aggregate.aggregate_files``), adding in
    caption row order, so it is the same for any number of partitions, bit for bit. A caption
    row whose caption no partition labelled is an error naming it."""
    t0 = time.perf_counter()
    checked = [partition_labels(labels_uri, p) for p in all_partitions(count)]
    uris = [uri for uri, _ in checked]
    params = merged_parameters([made_by.get("parameters", {}) for _, made_by in checked], count)
    made_by = provenance(**params)
    schemas = answer_schemas(distinct_captions(uris), load_labelset(params.get("labels"), max_parts=params.get("max_parts")))
    category_of = load_merge_table(params.get("merge"))
    with WriteLease(labels_uri, run_id, what="the merged labels tables") as lease:
        lease.ensure_held()
        result = aggregate_files(list(captions_uris), uris, category_of)
        out_labels, out_aggregate = storage.join(labels_uri, LABELS_NAME), storage.join(labels_uri, AGGREGATE_NAME)
        distinct = merge_label_tables(uris, out_labels, dict(made_by, **{LABELS_META_ANSWER_SCHEMAS: schemas}))
        status_counts = dict(sorted(result.status_counts.items()))
        write_table(out_aggregate, result.table, AGGREGATE_SCHEMA, LABELS_FORMAT + "/aggregate", LABELS_VERSION,
                    dict(made_by, **aggregate_metadata(category_of, status_counts, result.layer_status_counts)))
        rows = sum(sum(by_status.values()) for by_status in result.layer_status_counts.values())
        lease.ensure_held()
        summary: dict = {"captions": rows, "unique_captions": distinct, "partitions": count,
                         "dedup_saving_percent": round(100 * (1 - distinct / max(rows, 1)), 2),
                         "labels_uri": out_labels, "aggregate_uri": out_aggregate, "status_counts": status_counts,
                         "seconds": round(time.perf_counter() - t0, 2)}
        storage.write_json(storage.join(labels_uri, SUMMARY_NAME), summary)
    log.info("merged %d partitions: %d captions, %d distinct", count, rows, distinct)
    return summary
