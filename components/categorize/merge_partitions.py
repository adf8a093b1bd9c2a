"""The labelling's last step when it is split in partitions: one labels table, one aggregate.

Each partition's categorize task wrote the labels of its own captions under
``<labels>/partition-NNN-of-MMM/labels.parquet``. ``merge_partitions`` reads every caption row
again (the aggregate counts each occurrence of a caption at its layer), takes each distinct
caption's answer from its partition's table, and writes ``<labels>/labels.parquet`` and
``<labels>/aggregate.parquet`` with the same code a single categorize run writes them with
(``categorize.write_outputs``): rows in the order a single run gives them (first occurrence in
the captions), so the tables do not depend on the number of partitions.
"""

from __future__ import annotations

import logging
import time

from ..common import storage
from ..common.contracts import LABELS_META_ANSWER_SCHEMAS, LABELS_SCHEMA, provenance, read_table, table_metadata
from ..common.storage.write_lease import WriteLease
from .captions_io import read_captions
from .categorize import LABELS_NAME, SUMMARY_NAME, Answers, answer_schemas, write_outputs
from .labelset import Part, load_labelset
from .merge_table import load_merge_table
from .partitions import Partition, all_partitions

log = logging.getLogger(__name__)

# parameters a partition's tables record that differ between partitions by design
PER_PARTITION = ("partition",)


def read_partition_labels(labels_uri: str, partition: Partition) -> tuple[dict[str, dict], dict]:
    """``({caption: labels row}, the table's provenance)`` of one partition; an error naming the
    partition and the fix when its task has not finished."""
    uri = storage.join(partition.folder(labels_uri), LABELS_NAME)
    if not storage.exists(uri):
        raise FileNotFoundError(f"{partition.name} has no labels table ({uri}): its categorize task did not finish. "
                                "Retry the run: finished partitions are not labelled again, an interrupted one "
                                "resumes from its answer store")
    table = read_table(uri, LABELS_SCHEMA)
    made_by = table_metadata(table)
    if made_by.get("parameters", {}).get("partition") != partition.name:
        raise ValueError(f"{uri} was not written as {partition.name} (its metadata says "
                         f"{made_by.get('parameters', {}).get('partition')!r}): a labels folder of another run")
    return {row["caption"]: row for row in table.to_pylist()}, made_by


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
    partitions' labels tables (see the module docstring); returns a summary (also ``summary.json``)."""
    t0 = time.perf_counter()
    rows = read_captions(list(captions_uris))
    uniques = list(dict.fromkeys(r.caption for r in rows))
    answers_of: dict[str, dict] = {}
    provenances = []
    for partition in all_partitions(count):
        labelled, made_by = read_partition_labels(labels_uri, partition)
        stray = next((c for c in labelled if not partition.holds(c)), None)
        if stray is not None:
            raise ValueError(f"{partition.name} holds the caption {stray!r} of another partition: its folder was "
                             f"written with another partition count; give it a storage prefix of its own")
        answers_of.update(labelled)
        provenances.append(made_by)
    missing = [c for c in uniques if c not in answers_of]
    if missing:
        raise ValueError(f"{len(missing)} of {len(uniques)} distinct captions have no labels in their partition "
                         f"(e.g. {missing[0]!r} in {next(p.name for p in all_partitions(count) if p.holds(missing[0]))}): "
                         "those partitions were labelled from other captions; retry the run")
    params = merged_parameters([p.get("parameters", {}) for p in provenances], count)
    made_by = provenance(**params)
    table_rows = [{k: answers_of[c][k] for k in ("caption", "parts", "model", "status")} for c in uniques]
    answer_of = {r["caption"]: ([Part(p["text"], tuple(p["labels"])) for p in r["parts"]], r["status"]) for r in table_rows}
    schemas = answer_schemas(uniques, load_labelset(params.get("labels"), max_parts=params.get("max_parts")))
    answers = Answers(table_rows, [(r.layer, *answer_of[r.caption]) for r in rows], {LABELS_META_ANSWER_SCHEMAS: schemas})
    summary: dict = {"captions": len(rows), "unique_captions": len(uniques), "partitions": count,
                     "dedup_saving_percent": round(100 * (1 - len(uniques) / max(len(rows), 1)), 2)}
    with WriteLease(labels_uri, run_id, what="the merged labels tables") as lease:
        lease.ensure_held()
        summary.update(write_outputs(labels_uri, answers, load_merge_table(params.get("merge")), made_by),
                       seconds=round(time.perf_counter() - t0, 2))
        storage.write_json(storage.join(labels_uri, SUMMARY_NAME), summary)
    log.info("merged %d partitions: %d captions, %d distinct", count, len(rows), len(uniques))
    return summary
