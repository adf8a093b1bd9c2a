"""The categorize step: captions in, labels and per-layer aggregate tables out.

``run_categorize`` is the plain function the CLI and the KFP component call. It
deduplicates the captions, skips those already labelled (resume chunks), works out the
GPU layout, labels the rest (in this process, or in one process per replica), then writes
``labels.parquet`` (a row per distinct caption) and ``aggregate.parquet`` (per layer and
category) under ``out_uri``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import torch

from ..common import storage
from ..common.contracts import (
    AGGREGATE_SCHEMA,
    LABELS_FORMAT,
    LABELS_SCHEMA,
    LABELS_VERSION,
    caption_hash,
    provenance,
    write_table,
)
from .aggregate import aggregate
from .captions_io import read_captions
from .chunks import ChunkStore, run_key
from .labeller import label_captions
from .labelset import Part, load_labelset, load_merge_table
from .layout import Layout, detect_gpus, plan_layout
from .models import DEFAULT_MODEL, SMOLLM2, TINY_RANDOM, kv_bytes_per_token, load_config, model_bytes

log = logging.getLogger(__name__)

LABELS_NAME = "labels.parquet"
AGGREGATE_NAME = "aggregate.parquet"
SUMMARY_NAME = "summary.json"
CPU_BATCH_SIZE = 16
_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
           "float32": torch.float32, "fp32": torch.float32}


def resolve_dtype(dtype: str, n_gpus: int) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if n_gpus else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"--dtype {dtype!r}: use auto, bfloat16, float16 or float32")
    return _DTYPES[dtype]


def _smollm2_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                       num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)


def plan_for_model(model: str, n_gpus: int, gpu_bytes: int, dtype: torch.dtype, prompt_tokens: int, answer_tokens: int) -> Layout:
    config = _smollm2_config() if model == SMOLLM2 else load_config(model)
    seq_bytes = kv_bytes_per_token(config, dtype) * (prompt_tokens + answer_tokens) + config.vocab_size * 4 * 2
    return plan_layout(model_bytes(config, dtype), n_gpus, gpu_bytes, seq_bytes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_replicas(spec: dict, n: int) -> list[dict]:
    """One worker process per replica (``python -m latent_verbalizer.components.categorize.worker``) with the
    environment ``accelerate`` expects; each takes its share with ``split_between_processes``."""
    with tempfile.TemporaryDirectory(prefix="lverb-categorize-") as tmp:
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        port = _free_port()
        procs = []
        for rank in range(n):
            env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(n), LOCAL_WORLD_SIZE=str(n),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            out = os.path.join(tmp, f"stats-{rank}.json")
            procs.append((rank, out, subprocess.Popen([sys.executable, "-m", "latent_verbalizer.components.categorize.worker", spec_path, out], env=env)))
        failed = [rank for rank, _, p in procs if p.wait() != 0]
        if failed:
            raise RuntimeError(f"categorize replica process(es) {failed} failed (see their log above); "
                               "re-run the same command to resume from the chunks already written")
        return [json.load(open(out)) for _, out, _ in procs if os.path.exists(out)]


def run_worker(spec: dict, stats_path: str | None = None) -> dict:
    """Body of one replica process: take this process's share and label it."""
    from accelerate import PartialState

    state = PartialState(cpu=not spec["groups"][0])
    ls = load_labelset(spec["labels_uri"])
    with state.split_between_processes(spec["captions"]) as mine:
        group = spec["groups"][state.process_index]
        if group:
            # accelerate made cuda:{local_rank} current; this replica's model starts on its group's
            # first GPU, and kernels launched on the current device (xgrammar's Triton mask) must run there.
            torch.cuda.set_device(group[0])
        log.info("replica %d/%d: %d captions on %s", state.process_index, state.num_processes, len(mine), group or "CPU")
        store = ChunkStore(spec["out_uri"], spec["run_key"], writer=f"r{state.process_index}")
        stats = label_captions(list(mine), spec["model"], ls, _DTYPES[spec["dtype"]], store, spec["batch_size"],
                               gpus=group, max_memory={int(k): v for k, v in spec["max_memory"][state.process_index].items()} if group else None,
                               chunk_rows=spec["chunk_rows"], made_by=spec["made_by"])
    if stats_path:
        with open(stats_path, "w") as f:
            json.dump(stats, f)
    return stats


def run_categorize(captions_uris: list[str], out_uri: str, model: str = DEFAULT_MODEL, labels_uri: str | None = None,
                   merge_uri: str | None = None, gpus: int | None = None, batch_size: str | int = "auto",
                   dtype: str = "auto", import_raw: str | None = None, chunk_rows: int = 256,
                   replicas: int | None = None, _fault=None) -> dict:
    """Label every distinct caption and write ``labels.parquet`` and ``aggregate.parquet`` under ``out_uri``.

    ``captions_uris``: captions Parquet files (patterns allowed; or the study's
    ``caps_batch0.json``). ``model``: hub id, local folder, ``s3://`` prefix, ``tiny-random``
    or ``smollm2-135m``. ``gpus``: how many of the visible GPUs to use (default all).
    ``replicas``: force N CPU replica processes (tests; GPUs are planned automatically).
    ``import_raw``: a folder of the study's ``layer_N.json`` answers, instead of running a model.
    Returns a summary dict (also written as ``summary.json``).
    """
    t0 = time.perf_counter()
    rows = read_captions(list(captions_uris))
    ls = load_labelset(labels_uri)
    merge = load_merge_table(merge_uri)
    labels_out, agg_out = storage.join(out_uri, LABELS_NAME), storage.join(out_uri, AGGREGATE_NAME)
    uniques = list(dict.fromkeys(r.caption for r in rows))
    params = dict(captions=list(captions_uris), model=model, labels=ls.source, merge=merge_uri, gpus=gpus,
                  batch_size=str(batch_size), dtype=dtype, import_raw=import_raw)
    made_by = provenance(**params)
    summary: dict = {"captions": len(rows), "unique_captions": len(uniques),
                     "dedup_saving_percent": round(100 * (1 - len(uniques) / max(len(rows), 1)), 2)}

    if import_raw:
        from .import_raw import pair_answers, read_raw_answers

        per_row, first = pair_answers(rows, read_raw_answers(import_raw), set(ls.labels))
        name = f"{model} (raw answers imported from {import_raw})"
        table_rows = [{"caption": c, "parts": [{"text": p.text, "labels": list(p.labels)} for p in parts],
                       "model": name, "status": status} for c, (parts, status) in first.items()]
        summary["mode"] = "import-raw"
    else:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        n_gpus, gpu_bytes = detect_gpus(gpus)
        tdtype = resolve_dtype(dtype, n_gpus)
        dtype_name = str(tdtype).removeprefix("torch.")
        key = run_key(model, dtype_name, ls.fingerprint)
        store = ChunkStore(out_uri, key)
        done = store.load()
        todo = [c for c in uniques if caption_hash(c) not in done]
        summary.update(mode="generate", resumed=len(uniques) - len(todo), to_label=len(todo), run_key=key)
        log.info("%d captions, %d distinct (%.1f%% saved by dedup), %d already labelled, %d to label",
                 len(rows), len(uniques), summary["dedup_saving_percent"], summary["resumed"], len(todo))
        if todo:
            # KV sized for a typical answer (the study's need <= ~220 tokens re-encoded); a rare
            # long one is covered by the out-of-memory back-off.
            layout = plan_for_model(model, n_gpus, gpu_bytes, tdtype, prompt_tokens=768, answer_tokens=256)
            if replicas and not n_gpus:
                layout.replicas, layout.groups, layout.max_memory = replicas, [[] for _ in range(replicas)], [{}] * replicas
            log.info(layout.describe())
            summary["layout"] = layout.to_json()
            bs = int(batch_size) if str(batch_size) != "auto" else (layout.batch_size if n_gpus else CPU_BATCH_SIZE)
            if bs < 1:
                raise ValueError(f"--batch-size {batch_size!r}: use auto or a positive integer")
            summary["batch_size"] = bs
            spec = dict(captions=todo, model=model, labels_uri=ls.source, dtype=dtype_name, out_uri=out_uri, run_key=key,
                        batch_size=bs, groups=layout.groups, max_memory=layout.max_memory, chunk_rows=chunk_rows, made_by=made_by)
            if world > 1:                      # launched by `accelerate launch`: this process is one replica
                if len(layout.groups) != world:
                    raise ValueError(f"launched with {world} processes but the layout has {len(layout.groups)} replicas "
                                     f"({layout.describe()}): use `accelerate launch --num_processes {len(layout.groups)}` "
                                     "or run without accelerate launch (replicas are started automatically)")
                stats = [run_worker(spec)]
                from accelerate import PartialState

                PartialState().wait_for_everyone()
                if not PartialState().is_main_process:
                    return {**summary, "replica_stats": stats}
            elif layout.replicas > 1:
                stats = _spawn_replicas(spec, layout.replicas)
            else:
                group = layout.groups[0]
                stats = [label_captions(todo, model, ls, tdtype, store, bs, gpus=group,
                                        max_memory=layout.max_memory[0] if group else None,
                                        chunk_rows=chunk_rows, fault=_fault, made_by=made_by)]
            summary["replica_stats"] = stats
            done = store.load()
        missing = [c for c in uniques if caption_hash(c) not in done]
        if missing:
            raise RuntimeError(f"{len(missing)} captions have no answer after labelling (e.g. {missing[0]!r}); re-run to resume")
        table_rows = [{k: done[caption_hash(c)][k] for k in ("caption", "parts", "model", "status")} for c in uniques]
        parts_of = {r["caption"]: [Part(p["text"], tuple(p["labels"])) for p in r["parts"]] for r in table_rows}
        status_of = {r["caption"]: r["status"] for r in table_rows}
        per_row = [(r.layer, parts_of[r.caption], status_of[r.caption]) for r in rows]

    write_table(labels_out, pa.Table.from_pylist(table_rows, schema=LABELS_SCHEMA), LABELS_SCHEMA, LABELS_FORMAT, LABELS_VERSION, made_by)
    # The merge table travels with the aggregate, so a reader (the report) colours parts by category.
    write_table(agg_out, aggregate(per_row, merge), AGGREGATE_SCHEMA, LABELS_FORMAT + "/aggregate", LABELS_VERSION,
                dict(made_by, category_map=merge))
    counts: dict[str, int] = {}
    for r in table_rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    summary.update(labels_uri=labels_out, aggregate_uri=agg_out, status_counts=counts, seconds=round(time.perf_counter() - t0, 2))
    storage.write_json(storage.join(out_uri, SUMMARY_NAME), summary)
    log.info("wrote %s (%d distinct captions) and %s; statuses %s", labels_out, len(table_rows), agg_out, counts)
    return summary


__all__ = ["run_categorize", "run_worker", "plan_for_model", "TINY_RANDOM", "SMOLLM2"]
