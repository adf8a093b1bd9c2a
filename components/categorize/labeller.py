"""Labelling a list of distinct captions with one model replica: load the model, compile
the grammar, generate in length-sorted batches, and write the answers as resume chunks."""

from __future__ import annotations

import logging
import time

import torch

from ..common.progress import Progress
from .answers import max_new_tokens, parse_answer
from .chunks import ChunkStore
from .generate import Generator
from .grammar import compile_answer_grammar, stop_token_ids
from .labelset import LabelSet
from .models import load_model
from .prompt import split_prompt

log = logging.getLogger(__name__)


def label_captions(captions: list[str], model: str, ls: LabelSet, dtype: torch.dtype, store: ChunkStore,
                   batch_size: int, gpus: list[int] | None = None, max_memory: dict | None = None,
                   chunk_rows: int = 256, fault=None, made_by: dict | None = None) -> dict:
    """Label ``captions`` (already deduplicated) and write them to ``store``; returns stats."""
    t0 = time.perf_counter()
    gpus = gpus or []
    if len(gpus) > 1:
        m, tok, name = load_model(model, dtype, device_map="auto", max_memory=max_memory)
        log.info("model sharded: %s", sorted(set(str(v) for v in getattr(m, "hf_device_map", {}).values())))
    else:
        m, tok, name = load_model(model, dtype, device=f"cuda:{gpus[0]}" if gpus else "cpu")
    load_s = time.perf_counter() - t0
    pp = split_prompt(tok, ls)
    stops = stop_token_ids(tok, m)
    grammar = compile_answer_grammar(tok, ls, m.config.vocab_size, stops)
    pad = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    gen = Generator(m, pp.prefix_ids, grammar, stops, pad, max_new_tokens(ls), fault=fault)
    labels = set(ls.labels)
    suffixes = [pp.suffix_ids(tok, c) for c in captions]
    order = sorted(range(len(captions)), key=lambda i: -len(suffixes[i]))   # longest first: OOM shows early
    buf: list[dict] = []
    statuses: dict[str, int] = {}
    gen_t0 = time.perf_counter()
    with Progress("categorize", "captions", total=len(captions), logger=log) as prog:
        for idx, answers in gen.generate([suffixes[i] for i in order], batch_size):
            for k, a in zip(idx, answers):
                cap = captions[order[k]]
                text = tok.decode(a.token_ids, skip_special_tokens=False)
                parts, status = parse_answer(text, cap, labels)
                if not a.complete:
                    status = "truncated" if status == "ok" else status + ";truncated"
                statuses[status] = statuses.get(status, 0) + 1
                buf.append({"caption": cap, "parts": [{"text": p.text, "labels": list(p.labels)} for p in parts],
                            "model": name, "status": status, "answer": text, "n_new_tokens": len(a.token_ids)})
            prog.update(len(idx))
            if len(buf) >= chunk_rows:
                store.write(buf, made_by or {})
                buf = []
        if buf:
            store.write(buf, made_by or {})
    gen_s = time.perf_counter() - gen_t0
    st = gen.stats
    return {
        "model": name, "labelled": len(captions), "load_seconds": round(load_s, 2),
        "generate_seconds": round(gen_s, 2),
        "captions_per_second": round(len(captions) / gen_s, 3) if gen_s > 0 else None,
        "prefix_tokens": st.prefix_tokens, "max_new_tokens": gen.max_new_tokens,
        "mean_new_tokens": round(st.new_tokens / max(len(captions), 1), 1),
        "batches": st.batches, "ooms": st.ooms, "final_batch_size": gen.batch_size_now,
        "grammar_mask_seconds": round(st.mask_seconds, 3), "status_counts": statuses,
        "batch_sizes": st.batch_sizes,
    }

