"""Synthetic data of the real shapes for ``benchmarks/scale.py``, written with the project's own
writers and contracts: captions tables (a row per (image, layer), one file per shard, as the
caption step writes them), labels tables (a row per distinct caption, whole or split into
partitions by caption hash), answer-store files (as categorize's replicas write them) and
shard files to list.

Captions repeat as in the study (12,000 captions, 9,449 distinct: 79%); parts, labels and
statuses are drawn from the study's label list and merge table.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from latent_verbalizer.components.categorize.answer_store import AnswerStore
from latent_verbalizer.components.categorize.merge_table import load_merge_table
from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.contracts import (
    CAPTIONS_FORMAT,
    CAPTIONS_SCHEMA,
    CAPTIONS_VERSION,
    LABEL_PART,
    LABELS_FORMAT,
    LABELS_SCHEMA,
    LABELS_VERSION,
    caption_hash,
)
from latent_verbalizer.components.common.tables import write_table

LAYERS = 24
DISTINCT_SHARE = 9449 / 12000          # the study's distinct captions per caption row
WORDS = ("a man woman dog cat red blue green large small wooden table street car tree sky water "
         "person riding standing sitting close up of the on in with next to an old young white black").split()
STATUSES = np.array(["ok", "label_not_in_list", "part_not_in_caption", "ok;answer_limit", "unparseable", "no_parts"])
STATUS_P = np.array([0.80, 0.10, 0.05, 0.03, 0.01, 0.01])


def caption_text(ids: np.ndarray) -> list[str]:
    """One caption of 8 to 11 words per id (a distinct id, a distinct text), ~50 characters."""
    w = len(WORDS)
    return [f"{WORDS[i % w]} {WORDS[(i // w) % w]} {WORDS[(i // w // w) % w]} of a {WORDS[(i * 7) % w]} "
            f"on the {WORDS[(i * 13) % w]} {WORDS[(i * 3) % w]} {i}" for i in ids.tolist()]


def caption_ids(images: int, seed: int = 0) -> np.ndarray:
    """``[images * LAYERS]`` caption ids, image-major: a new caption with the study's share of
    distinct captions, else one of the captions already made (repeats, as across layers and images)."""
    rng = np.random.default_rng(seed)
    n = images * LAYERS
    new = rng.random(n) < DISTINCT_SHARE
    new[0] = True
    made = np.cumsum(new) - 1                        # the newest id made so far, at each row
    repeat = (rng.random(n) * (made + 1)).astype(np.int64)
    return np.where(new, made, repeat)


def write_captions(base: str, ids: np.ndarray, images_per_shard: int, seed: int = 0) -> list[str]:
    """The captions tables of ``ids`` (image-major), one per shard of ``images_per_shard`` images."""
    rng = np.random.default_rng(seed + 1)
    rows_per_shard = images_per_shard * LAYERS
    uris = []
    for shard, start in enumerate(range(0, len(ids), rows_per_shard)):
        chunk = ids[start:start + rows_per_shard]
        n = len(chunk)
        n_tokens = rng.integers(8, 16, n).astype(np.int32)
        offsets = np.concatenate([[0], np.cumsum(n_tokens)]).astype(np.int32)
        image = (start + np.arange(n)) // LAYERS
        table = pa.table({
            "image_key": pa.array([f"img{i:08d}" for i in image.tolist()]),
            "shard": pa.array([f"shard-{shard:05d}"] * n),
            "layer": pa.array((np.arange(start, start + n) % LAYERS).astype(np.int32)),
            "caption": pa.array(caption_text(chunk)),
            "token_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(rng.integers(1, 49407, offsets[-1]).astype(np.int32))),
            "n_tokens": pa.array(n_tokens),
            "stop": pa.array(["eos"] * n),
            "entropy_bits": pa.array(rng.random(n).astype(np.float32) * 8),
            "mean_logprob": pa.array(-rng.random(n).astype(np.float32)),
        })
        uri = storage.join(base, f"captions-{shard:05d}.parquet")
        write_table(uri, table, CAPTIONS_SCHEMA, CAPTIONS_FORMAT, CAPTIONS_VERSION, {"synthetic": True})
        uris.append(uri)
    return uris


def label_rows(n_distinct: int, seed: int = 0) -> pa.Table:
    """A labels table (LABELS_SCHEMA) of captions ``0..n_distinct-1``: 1 to 7 parts each, 1 to 3
    labels per part from the merge table (5% not in it), statuses as a real run's."""
    rng = np.random.default_rng(seed + 2)
    labels = np.array(sorted(load_merge_table()) + ["not-a-label"], dtype=object)
    status = STATUSES[rng.choice(len(STATUSES), n_distinct, p=STATUS_P)]
    n_parts = np.where(status == "no_parts", 0, rng.integers(1, 8, n_distinct)).astype(np.int32)
    total = int(n_parts.sum())
    n_labels = rng.integers(1, 4, total).astype(np.int32)
    label_idx = rng.integers(0, len(labels) - 1, int(n_labels.sum()))
    label_idx[rng.random(len(label_idx)) < 0.05] = len(labels) - 1
    part_labels = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(n_labels)]).astype(np.int32)),
                                           pa.array(labels[label_idx].tolist(), pa.string()))
    part_text = pa.array(np.array(WORDS, dtype=object)[rng.integers(0, len(WORDS), total)].tolist(), pa.string())
    parts = pa.StructArray.from_arrays([part_text, part_labels], fields=list(LABEL_PART))
    return pa.table({
        "caption": pa.array(caption_text(np.arange(n_distinct))),
        "parts": pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(n_parts)]).astype(np.int32)), parts),
        "model": pa.array(["synthetic"] * n_distinct),
        "status": pa.array(status.tolist()),
    })


def write_labels(base: str, table: pa.Table, partitions: int) -> tuple[str, list[str]]:
    """The labels table whole, and split into ``partitions`` tables by caption hash (as partitioned
    labelling splits the captions)."""
    whole = storage.join(base, "labels.parquet")
    write_table(whole, table, LABELS_SCHEMA, LABELS_FORMAT, LABELS_VERSION, {"synthetic": True})
    part_of = np.array([int(caption_hash(c), 16) % partitions for c in table.column("caption").to_pylist()])
    parts = []
    for p in range(partitions):
        uri = storage.join(base, f"labels-part{p}.parquet")
        write_table(uri, table.filter(pa.array(part_of == p)), LABELS_SCHEMA, LABELS_FORMAT, LABELS_VERSION, {"synthetic": True})
        parts.append(uri)
    return whole, parts


def write_answer_store(base: str, table: pa.Table, per_file: int = 256, writers: int = 4) -> AnswerStore:
    """The labels as answer-store files of ``per_file`` answers (categorize's default), from
    ``writers`` replicas, each answer with a raw answer text of a real answer's length."""
    stores = [AnswerStore(base, "bench", writer=f"r{w}") for w in range(writers)]
    for i, start in enumerate(range(0, table.num_rows, per_file)):
        batch = table.slice(start, per_file).to_pylist()
        for row in batch:
            row["answer"] = '{"parts": [' + ", ".join(f'{{"part": "{p["text"]}", "labels": {p["labels"]}}}'
                                                      for p in row["parts"]) + "]}"
            row["n_new_tokens"] = 40 + 12 * len(row["parts"])
        stores[i % writers].write(batch, {"synthetic": True})
    return stores[0]


def write_shard_files(folder: str, n: int) -> str:
    """``n`` small shard files ``shard-00000.tar``...; returns the brace pattern naming them all."""
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        with open(os.path.join(folder, f"shard-{i:05d}.tar"), "wb") as f:
            f.write(b"x")
    return os.path.join(folder, f"shard-{{00000..{n - 1:05d}}}.tar")
