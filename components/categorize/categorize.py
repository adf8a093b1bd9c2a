"""The categorize step: captions in, labels and per-layer aggregate tables out.

``run_categorize`` is the plain function the CLI and the KFP component call. It reads and
deduplicates the captions, gets an answer for every distinct caption (from a model, or the
study's raw answers with ``import_raw``), then writes ``labels.parquet`` (a row per
distinct caption) and ``aggregate.parquet`` (per layer and category) under ``out_uri``.

With a model, answers already in the answer store are reused, and the rest are labelled in
one of three ways: in this process (one replica), in one process per replica
(``replicas.processes``), or, under ``accelerate launch``, this process being one replica.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import torch

from ..common import storage
from ..common.contracts import (
    AGGREGATE_META_CATEGORIES,
    AGGREGATE_META_CATEGORY_MAP,
    AGGREGATE_META_LAYER_STATUS_COUNTS,
    AGGREGATE_META_NOT_AGGREGATED,
    AGGREGATE_META_STATUS_COUNTS,
    AGGREGATE_SCHEMA,
    LABELS_FORMAT,
    LABELS_META_ANSWER_SCHEMAS,
    LABELS_META_IMPORT_RECOVERY,
    LABELS_SCHEMA,
    LABELS_VERSION,
    NOT_AGGREGATED,
    caption_hash,
)
from ..common.devices import available_host_bytes, usable_cpu_cores
from ..common.memory_budget import config_kv_bytes_per_token, logits_bytes
from ..common.progress import Progress
from ..common.storage.write_lease import WriteLease
from ..common.tables import provenance, write_table
from .aggregate import aggregate, layer_status_counts
from .answer_store import AnswerStore, run_key
from .answers import ANSWER_TOKENS_RULE, BOUNDS_RULE, answer_bounds, answer_schema, answer_token_bound
from .captions_io import CaptionRow, read_captions
from .labelset import LabelSet, Part, load_labelset
from .llm.layout import Layout, cpu_replica_count, detect_gpus, plan_layout
from .llm.loading import DEFAULT_MODEL, resolve_dtype
from .llm.model_source import load_config
from .llm.sizing import model_bytes
from .merge_table import load_merge_table, merge_categories
from .partitions.split import Partition
from .replicas.processes import spawn_replica_processes
from .replicas.replica import label_captions, run_replica

log = logging.getLogger(__name__)

LABELS_NAME = "labels.parquet"
AGGREGATE_NAME = "aggregate.parquet"
SUMMARY_NAME = "summary.json"
TODO_NAME = "todo.json"           # under accelerate launch: the captions to label, as rank 0 found them
CPU_BATCH_SIZE = 16
# KV cache of the prompt (prefix + caption) of one row; its answer's share is the longest
# answer token bound of the captions to label (``answers.answer_token_bound``), the same bound
# that stops a row, so a batch the plan admits holds its rows to the end.
PLAN_PROMPT_TOKENS = 768


@dataclass
class Answers:
    """Every caption's answer: the labels table's rows (a row per distinct caption), a
    ``(layer, parts, status)`` per caption row for the aggregate, and labels-table metadata."""

    table_rows: list[dict]
    per_row: list[tuple[int, list[Part], str]]
    labels_meta: dict = field(default_factory=dict)


def plan_for_model(model: str, n_gpus: int, gpu_bytes: int, dtype: torch.dtype, prompt_tokens: int, answer_tokens: int,
                   n_captions: int = 0, cpu_replicas: int | str = "auto") -> Layout:
    """The layout for ``model``: GPUs as ``plan_layout`` plans them; without GPUs, ``cpu_replicas``
    replica processes (``auto``: one per usable CPU core that ``n_captions`` keep busy, ``cpu_replica_count``)."""
    config = load_config(model)
    seq_bytes = config_kv_bytes_per_token(config, dtype) * (prompt_tokens + answer_tokens) + logits_bytes(config.vocab_size, 2)
    weights = model_bytes(config, dtype)
    if n_gpus:
        cpu_replicas = 1
    elif str(cpu_replicas) == "auto":
        cpu_replicas = cpu_replica_count(n_captions, weights, usable_cpu_cores(), available_host_bytes())
    return plan_layout(weights, n_gpus, gpu_bytes, seq_bytes, cpu_replicas=max(1, min(int(cpu_replicas), n_captions or 1)))


def answer_schemas(captions: Iterable[str], label_set: LabelSet) -> dict:
    """The exact answer schemas the captions' answers are held to, with the rule that picks one."""
    bounds = sorted({answer_bounds(c, label_set.limits) for c in captions}, key=lambda b: (b.max_parts, b.max_part_chars))
    return {"rule": BOUNDS_RULE, "answer_tokens_rule": ANSWER_TOKENS_RULE, "limits": {"max_parts": label_set.limits.max_parts, "max_part_chars": label_set.limits.max_part_chars,
                                            "max_labels": label_set.limits.max_labels},
            "schemas": {b.key: answer_schema(label_set, b) for b in bounds}}


# ------------------------------------------------------------------ answers from the study's raw files

def import_raw_answers(rows: list[CaptionRow], raw_dir: str, label_set: LabelSet, model: str) -> Answers:
    from .import_raw import pair_answers, read_raw_answers

    per_row, first, recovery = pair_answers(rows, read_raw_answers(raw_dir), set(label_set.labels))
    name = f"{model} (raw answers imported from {raw_dir})"
    table_rows = [{"caption": c, "parts": [{"text": p.text, "labels": list(p.labels)} for p in parts],
                  "model": name, "status": status} for c, (parts, status) in first.items()]
    return Answers(table_rows, per_row, {LABELS_META_ANSWER_SCHEMAS: None,
                                         LABELS_META_IMPORT_RECOVERY: {str(k): v for k, v in recovery.items()}})


# ------------------------------------------------------------------ answers from a model

def _batch_size(batch_size: str | int, layout: Layout, n_gpus: int) -> int:
    size = int(batch_size) if str(batch_size) != "auto" else (layout.batch_size if n_gpus else CPU_BATCH_SIZE)
    if size < 1:
        raise ValueError(f"--batch-size {batch_size!r}: use auto or a positive integer")
    return size


def _launched_rank() -> int:
    """This process's rank under ``accelerate launch`` (0 outside one)."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def _todo_of_launch(store: AnswerStore, uniques: list[str], cpu: bool) -> list[str]:
    """Under ``accelerate launch``: the captions still to label, worked out once. Rank 0 reads
    the answer store and writes the list next to it, before it joins the others; every rank
    reads that file after a barrier. Each rank reading the store itself could see another
    list (a rank that starts later sees answers written meanwhile), and the ranks' shares of
    their lists (``split_between_processes``) would then overlap and leave captions out."""
    from accelerate import PartialState

    uri = storage.join(store.dir, TODO_NAME)
    if _launched_rank() == 0:
        storage.write_json(uri, {"captions": store.answered_hashes().missing(uniques)})
    PartialState(cpu=cpu).wait_for_everyone()
    return storage.read_json(uri)["captions"]


def _label_under_accelerate(spec: dict, layout: Layout, world: int) -> list[dict] | None:
    """This process is one replica of ``accelerate launch``; the stats on the main process, None elsewhere."""
    from accelerate import PartialState

    if len(layout.groups) != world:
        raise ValueError(f"launched with {world} processes but the layout has {len(layout.groups)} replicas "
                         f"({layout.describe()}): use `accelerate launch --num_processes {len(layout.groups)}` "
                         "or run without accelerate launch (replicas are started automatically)")
    stats = [run_replica(spec)]
    PartialState().wait_for_everyone()
    return stats if PartialState().is_main_process else None


def _label(todo: list[str], spec: dict, layout: Layout, label_set: LabelSet, dtype: torch.dtype, store: AnswerStore) -> list[dict] | None:
    """Label ``todo`` into ``store`` the way the layout and the launch ask for; replica stats."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        return _label_under_accelerate(spec, layout, world)
    if layout.replicas > 1:
        # The step's summary line; each replica shows its own share's progress.
        with Progress(f"categorize ({layout.replicas} replica processes)", "captions", total=len(todo), logger=log,
                      bar=False) as progress:
            stats = spawn_replica_processes(spec, layout.replicas)
            progress.update(len(todo))
        return stats
    group = layout.groups[0]
    return [label_captions(todo, spec["model"], label_set, dtype, store, spec["batch_size"], gpus=group,
                           max_memory=layout.max_memory[0] if group else None,
                           answers_per_file=spec["answers_per_file"], made_by=spec["made_by"])]


def model_answers(rows: list[CaptionRow], uniques: list[str], out_uri: str, model: str, label_set: LabelSet,
                  gpus: int | None, batch_size: str | int, dtype: str, answers_per_file: int, made_by: dict,
                  summary: dict, cpu_replicas: int | str = "auto") -> Answers | None:
    """Answers of every distinct caption, reusing the stored ones; None on a non-main
    process of ``accelerate launch`` (the main one writes the tables)."""
    n_gpus, gpu_bytes = detect_gpus(gpus)
    tdtype = resolve_dtype(dtype, n_gpus)
    dtype_name = str(tdtype).removeprefix("torch.")
    key = run_key(model, dtype_name, label_set.fingerprint)
    store = AnswerStore(out_uri, key)
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if launched:
        todo = _todo_of_launch(store, uniques, cpu=n_gpus == 0)
    else:
        todo = store.answered_hashes().missing(uniques)
    summary.update(mode="generate", resumed=len(uniques) - len(todo), to_label=len(todo), run_key=key)
    log.info("%d captions, %d distinct (%.1f%% saved by dedup), %d already labelled, %d to label",
             len(rows), len(uniques), summary["dedup_saving_percent"], summary["resumed"], len(todo))
    if todo:
        answer_tokens = max(answer_token_bound(c, label_set) for c in todo)
        layout = plan_for_model(model, n_gpus, gpu_bytes, tdtype, PLAN_PROMPT_TOKENS, answer_tokens, len(todo),
                                cpu_replicas)
        log.info(layout.describe())
        summary.update(layout=layout.to_json(), plan_answer_tokens=answer_tokens, batch_size=_batch_size(batch_size, layout, n_gpus))
        spec = dict(captions=todo, model=model, labels_uri=label_set.source, dtype=dtype_name, out_uri=out_uri, run_key=key,
                    batch_size=summary["batch_size"], groups=layout.groups, max_memory=layout.max_memory,
                    answers_per_file=answers_per_file, made_by=made_by, max_parts=label_set.limits.max_parts)
        stats = _label(todo, spec, layout, label_set, tdtype, store)
        if stats is None:
            return None
        summary["replica_stats"] = stats
    if launched and _launched_rank() != 0:
        return None                          # nothing was left to label; the main process writes the tables
    done = store.load()
    missing = [c for c in uniques if caption_hash(c) not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} captions have no answer after labelling (e.g. {missing[0]!r}); re-run to resume")
    table_rows = [{k: done[caption_hash(c)][k] for k in ("caption", "parts", "model", "status")} for c in uniques]
    answer_of = {r["caption"]: ([Part(p["text"], tuple(p["labels"])) for p in r["parts"]], r["status"]) for r in table_rows}
    per_row = [(r.layer, *answer_of[r.caption]) for r in rows]
    return Answers(table_rows, per_row, {LABELS_META_ANSWER_SCHEMAS: answer_schemas(uniques, label_set)})


# ------------------------------------------------------------------ outputs

def aggregate_metadata(category_of: dict[str, str], status_counts: dict[str, int],
                       layer_status: dict[int, dict[str, int]]) -> dict:
    """Everything a reader (the report) needs travels with the aggregate: no second parser of the merge table."""
    return {AGGREGATE_META_CATEGORY_MAP: category_of, AGGREGATE_META_CATEGORIES: merge_categories(category_of),
            AGGREGATE_META_STATUS_COUNTS: dict(sorted(status_counts.items())),
            AGGREGATE_META_LAYER_STATUS_COUNTS: {str(k): v for k, v in layer_status.items()},
            AGGREGATE_META_NOT_AGGREGATED: list(NOT_AGGREGATED)}


def write_outputs(out_uri: str, answers: Answers, category_of: dict[str, str], made_by: dict) -> dict:
    """Write the labels and aggregate tables; returns what the summary reports of them."""
    labels_uri, aggregate_uri = storage.join(out_uri, LABELS_NAME), storage.join(out_uri, AGGREGATE_NAME)
    status_counts: dict[str, int] = {}
    for row in answers.table_rows:
        status_counts[row["status"]] = status_counts.get(row["status"], 0) + 1
    write_table(labels_uri, pa.Table.from_pylist(answers.table_rows, schema=LABELS_SCHEMA), LABELS_SCHEMA,
                LABELS_FORMAT, LABELS_VERSION, dict(made_by, **answers.labels_meta))
    aggregate_meta = aggregate_metadata(category_of, status_counts, layer_status_counts(answers.per_row))
    write_table(aggregate_uri, aggregate(answers.per_row, category_of), AGGREGATE_SCHEMA, LABELS_FORMAT + "/aggregate",
                LABELS_VERSION, dict(made_by, **aggregate_meta))
    log.info("wrote %s (%d distinct captions) and %s; statuses %s", labels_uri, len(answers.table_rows), aggregate_uri, status_counts)
    return {"labels_uri": labels_uri, "aggregate_uri": aggregate_uri, "status_counts": status_counts}


def run_categorize(captions_uris: list[str], out_uri: str, model: str = DEFAULT_MODEL, labels_uri: str | None = None,
                   merge_uri: str | None = None, gpus: int | None = None, batch_size: str | int = "auto",
                   dtype: str = "auto", import_raw: str | None = None, answers_per_file: int = 256,
                   max_parts: int | None = None, run_id: str = "", cpu_replicas: int | str = "auto",
                   partition: Partition | None = None) -> dict:
    """Label every distinct caption and write ``labels.parquet`` and ``aggregate.parquet`` under ``out_uri``.

    ``captions_uris``: captions Parquet files (patterns allowed; or the study's
    ``caps_batch0.json``). ``model``: hub id, local folder, ``s3://`` prefix, ``tiny-random-llama``
    or ``smollm2-135m``. ``gpus``: how many of the visible GPUs to use (default all).
    ``import_raw``: a folder of the study's ``layer_N.json`` answers, instead of running a model.
    ``answers_per_file``: answers per file of the answer store (what a killed run keeps).
    ``max_parts``: cap the parts of an answer (a cheaper, recorded deviation from the study,
    e.g. for the demo; default: bounded by each caption only, as in the study).
    ``cpu_replicas``: without GPUs, how many single-threaded replica processes label (default ``auto``:
    one per usable core that the work keeps busy, ``llm.layout.cpu_replica_count``; a pod's CPU limit
    counts). On an idle 2-core machine two SmolLM2 replicas labelled the demo's 48 captions in 60 s
    against 81 s for one (benchmarks/demo_labelling.py); ``1`` where the cores are busy with other work.
    ``run_id``: the pipeline run named in ``out_uri``'s write lease (empty: a CLI run); another
    run labelling into the same ``out_uri`` at once is refused (common.storage.write_lease).
    ``partition``: label only the captions of this partition (``partitions.split``; merged by ``partitions.merge``).
    Returns a summary dict (also written as ``summary.json``).
    """
    t0 = time.perf_counter()
    rows = read_captions(list(captions_uris))
    if partition is not None:
        rows = partition.select(rows)
    label_set = load_labelset(labels_uri, max_parts=max_parts)
    category_of = load_merge_table(merge_uri)
    uniques = list(dict.fromkeys(r.caption for r in rows))
    made_by = provenance(captions=list(captions_uris), model=model, labels=label_set.source, merge=merge_uri, gpus=gpus,
                         batch_size=str(batch_size), dtype=dtype, import_raw=import_raw,
                         max_parts=max_parts, **({"partition": partition.name} if partition else {}))
    summary: dict = {"captions": len(rows), "unique_captions": len(uniques),
                     "dedup_saving_percent": round(100 * (1 - len(uniques) / max(len(rows), 1)), 2)}
    # One run labels into out_uri at a time: two runs of other settings sharing a storage prefix
    # would otherwise leave one's labels table beside the other's aggregate.
    # Under ``accelerate launch`` the launch is one run: rank 0 holds the lease for it, and the other
    # ranks write only answer files of their own names (rank 0 writes the tables).
    follower = _launched_rank() > 0
    with contextlib.nullcontext() if follower else WriteLease(out_uri, run_id, what="the labels tables") as lease:
        if import_raw:
            answers = import_raw_answers(rows, import_raw, label_set, model)
            summary.update(mode="import-raw", import_raw_recovery=answers.labels_meta[LABELS_META_IMPORT_RECOVERY])
        else:
            answers = model_answers(rows, uniques, out_uri, model, label_set, gpus, batch_size, dtype, answers_per_file,
                                    made_by, summary, cpu_replicas)
            if answers is None:
                return summary
        if lease is not None:
            lease.ensure_held()
        summary.update(write_outputs(out_uri, answers, category_of, made_by), seconds=round(time.perf_counter() - t0, 2))
        storage.write_json(storage.join(out_uri, SUMMARY_NAME), summary)
    return summary
