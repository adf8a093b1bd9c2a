"""Resumable results: labelled captions are written in chunks (Parquet, keyed by caption
hash) under ``OUT/chunks/RUN_KEY/`` as they are produced; a restarted run reads them and
labels only what is missing. ``RUN_KEY`` fingerprints the model, dtype and labels/prompt
file, so a changed set-up never reuses stale answers."""

from __future__ import annotations

import hashlib
import uuid

import pyarrow as pa

from ..common import storage
from ..common.contracts import LABEL_PART, LABELS_FORMAT, LABELS_VERSION, caption_hash, read_table, write_table

CHUNK_SCHEMA = pa.schema([
    pa.field("caption_hash", pa.string(), nullable=False),
    pa.field("caption", pa.string(), nullable=False),
    pa.field("parts", pa.list_(LABEL_PART), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("answer", pa.string(), nullable=False),        # the raw answer text
    pa.field("n_new_tokens", pa.int32(), nullable=False),
])


def run_key(model: str, dtype: str, labels_fingerprint: str) -> str:
    return hashlib.sha256(f"{model}|{dtype}|{labels_fingerprint}".encode()).hexdigest()[:12]


class ChunkStore:
    def __init__(self, out_uri: str, key: str, writer: str = "0"):
        self.dir = storage.join(out_uri, "chunks", key)
        self.writer = writer
        self.seq = 0

    def chunk_uris(self) -> list[str]:
        return [u for u in storage.list_uris(self.dir) if storage.basename(u).startswith("chunk-") and u.endswith(".parquet")]

    def load(self) -> dict[str, dict]:
        """caption hash -> row (dict of CHUNK_SCHEMA columns) of everything done so far."""
        done: dict[str, dict] = {}
        for uri in self.chunk_uris():
            for row in read_table(uri, CHUNK_SCHEMA).to_pylist():
                done.setdefault(row["caption_hash"], row)
        return done

    def write(self, rows: list[dict], made_by: dict) -> str:
        for r in rows:
            r.setdefault("caption_hash", caption_hash(r["caption"]))
        uri = storage.join(self.dir, f"chunk-{self.writer}-{self.seq:06d}-{uuid.uuid4().hex[:8]}.parquet")
        self.seq += 1
        write_table(uri, pa.Table.from_pylist(rows, schema=CHUNK_SCHEMA), CHUNK_SCHEMA, LABELS_FORMAT + "/chunk", LABELS_VERSION, made_by)
        return uri
