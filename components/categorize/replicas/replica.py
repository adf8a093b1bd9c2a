"""One model replica at work: load the model, hold each caption's answer to the grammar of
its bounds, generate in length-sorted batches, and write the answers to the answer store.

``run_replica`` is the body of a replica process (``worker.py``) and of a process that
``accelerate launch`` started: it takes this process's share of the captions."""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager

import torch

from ...common.precision import torch_dtype
from ...common.progress import Progress
from ..answer_store import AnswerStore
from ..answers import (
    ANSWER_LIMIT,
    answer_bounds,
    answer_token_bound,
    limit_reached,
    max_new_tokens,
    parse_answer,
)
from ..grammar import AnswerGrammars, stop_token_ids
from ..labelset import LabelSet, load_labelset
from ..llm.generate import Generator
from ..llm.loading import load_llm
from ..prompt import split_prompt

log = logging.getLogger(__name__)


def _load_replica_model(model: str, dtype: torch.dtype, gpus: list[int], max_memory: dict | None):
    if len(gpus) > 1:
        net, tokenizer, name = load_llm(model, dtype, device_map="auto", max_memory=max_memory)
        log.info("model sharded: %s", sorted(set(str(v) for v in getattr(net, "hf_device_map", {}).values())))
    else:
        net, tokenizer, name = load_llm(model, dtype, device=f"cuda:{gpus[0]}" if gpus else "cpu")
    return net, tokenizer, name


# Intra-op threads for CPU decoding. Steps of a small batch are small matrix products: a
# second OpenMP thread gains little, and on a busy machine threads that wait for each other
# made a SmolLM2 step 37x slower (3.3 s against 0.09 s; benchmarks/demo_labelling.py).
CPU_DECODE_THREADS = 1


@contextmanager
def torch_threads(n: int | None):
    """Run with ``n`` intra-op threads (unchanged when None), restored afterwards."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def label_captions(captions: list[str], model: str, label_set: LabelSet, dtype: torch.dtype, store: AnswerStore,
                   batch_size: int, gpus: list[int] | None = None, max_memory: dict | None = None,
                   answers_per_file: int = 256, made_by: dict | None = None) -> dict:
    """Label ``captions`` (already deduplicated) and write them to ``store``; returns stats."""
    with torch_threads(None if gpus else CPU_DECODE_THREADS):
        return _label_captions(captions, model, label_set, dtype, store, batch_size, gpus or [], max_memory, answers_per_file,
                               made_by or {})


def _label_captions(captions: list[str], model: str, label_set: LabelSet, dtype: torch.dtype, store: AnswerStore,
                    batch_size: int, gpus: list[int], max_memory: dict | None, answers_per_file: int,
                    made_by: dict) -> dict:
    t0 = time.perf_counter()
    net, tokenizer, name = _load_replica_model(model, dtype, gpus, max_memory)
    load_s = time.perf_counter() - t0
    prompt = split_prompt(tokenizer, label_set)
    stops = stop_token_ids(tokenizer, net)
    grammars = AnswerGrammars(tokenizer, label_set, net.config.vocab_size, stops)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    labels = set(label_set.labels)
    suffixes = [prompt.suffix_ids(tokenizer, c) for c in captions]
    bounds_of = [answer_bounds(c, label_set.limits) for c in captions]
    # Each row is held to its caption's grammar and token bound, so captions of any bounds share a
    # batch; longest prompt first (rows of a batch pad to its longest; an out-of-memory shows early).
    limits = [min(answer_token_bound(c, label_set), max_new_tokens(label_set, b)) for c, b in zip(captions, bounds_of)]
    order = sorted(range(len(captions)), key=lambda i: -len(suffixes[i]))
    generator = Generator(net, prompt.prefix_ids, None, stops, pad, max(limits, default=0))
    pending: list[dict] = []
    statuses: dict[str, int] = {}
    gen_t0 = time.perf_counter()
    with Progress("categorize", "captions", total=len(captions), logger=log) as progress:
        for positions, answers in generator.generate([suffixes[i] for i in order], batch_size, [limits[i] for i in order],
                                                     [grammars(bounds_of[i]) for i in order]):
            for k, answer in zip(positions, answers):
                caption, bounds = captions[order[k]], bounds_of[order[k]]
                text = tokenizer.decode(answer.token_ids, skip_special_tokens=False)
                parts, status = parse_answer(text, caption, labels)
                if limit_reached(parts, bounds, answer.complete):
                    status = ANSWER_LIMIT if status == "ok" else f"{status};{ANSWER_LIMIT}"
                statuses[status] = statuses.get(status, 0) + 1
                pending.append({"caption": caption, "parts": [{"text": p.text, "labels": list(p.labels)} for p in parts],
                                "model": name, "status": status, "answer": text, "n_new_tokens": len(answer.token_ids)})
            progress.update(len(positions))
            if len(pending) >= answers_per_file:
                store.write(pending, made_by)
                pending = []
        if pending:
            store.write(pending, made_by)
    gen_s = time.perf_counter() - gen_t0
    stats = generator.stats
    return {
        "model": name, "labelled": len(captions), "load_seconds": round(load_s, 2),
        "generate_seconds": round(gen_s, 2),
        "captions_per_second": round(len(captions) / gen_s, 3) if gen_s > 0 else None,
        "prefix_tokens": stats.prefix_tokens, "answer_grammars": sorted(grammars.schemas),
        "mean_new_tokens": round(stats.new_tokens / max(len(captions), 1), 1),
        "decode_steps": stats.steps, "batches": stats.batches, "ooms": stats.ooms,
        "final_batch_size": generator.batch_size_now,
        "grammar_mask_seconds": round(stats.mask_seconds, 3), "status_counts": statuses,
        "batch_sizes": stats.batch_sizes,
    }


def run_replica(spec: dict, stats_path: str | None = None) -> dict:
    """Body of one replica process: take this process's share of ``spec["captions"]`` and
    label it (``spec``: what ``categorize.replica_spec`` builds)."""
    from accelerate import PartialState

    state = PartialState(cpu=not spec["groups"][0])
    label_set = load_labelset(spec["labels_uri"], max_parts=spec["max_parts"])
    with state.split_between_processes(spec["captions"]) as mine:
        group = spec["groups"][state.process_index]
        if group:
            # accelerate made cuda:{local_rank} current; this replica's model starts on its group's
            # first GPU, and kernels launched on the current device (xgrammar's Triton mask) must run there.
            torch.cuda.set_device(group[0])
        log.info("replica %d/%d: %d captions on %s", state.process_index, state.num_processes, len(mine), group or "CPU")
        store = AnswerStore(spec["out_uri"], spec["run_key"], writer=f"r{state.process_index}")
        max_memory = {int(k): v for k, v in spec["max_memory"][state.process_index].items()} if group else None
        stats = label_captions(list(mine), spec["model"], label_set, torch_dtype(spec["dtype"]), store, spec["batch_size"],
                               gpus=group, max_memory=max_memory, answers_per_file=spec["answers_per_file"],
                               made_by=spec["made_by"])
    if stats_path:
        with open(stats_path, "w") as f:
            json.dump(stats, f)
    return stats
