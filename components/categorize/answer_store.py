"""The answer store: labelled captions are written in batches of rows (Parquet, keyed by
caption hash) under ``OUT/answers/RUN_KEY/`` as they are produced; a restarted run reads
them and labels only what is missing. ``RUN_KEY`` fingerprints the model, dtype and
labels/prompt file, so a changed set-up never reuses stale answers. Several writers
(replica processes) write side by side, each under its own name."""

from __future__ import annotations

import hashlib
import uuid

import pyarrow as pa

from ..common import storage
from ..common.contracts import LABEL_PART, LABELS_FORMAT, LABELS_VERSION, caption_hash, read_table, write_table

STORED_ANSWER_SCHEMA = pa.schema([
    pa.field("caption_hash", pa.string(), nullable=False),
    pa.field("caption", pa.string(), nullable=False),
    pa.field("parts", pa.list_(LABEL_PART), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("answer", pa.string(), nullable=False),        # the raw answer text
    pa.field("n_new_tokens", pa.int32(), nullable=False),
])
STORE_DIR = "answers"
FILE_PREFIX = "answers-"


def run_key(model: str, dtype: str, labels_fingerprint: str) -> str:
    return hashlib.sha256(f"{model}|{dtype}|{labels_fingerprint}".encode()).hexdigest()[:12]


class AnswerStore:
    def __init__(self, out_uri: str, key: str, writer: str = "0"):
        self.dir = storage.join(out_uri, STORE_DIR, key)
        self.writer = writer
        self.seq = 0

    def file_uris(self) -> list[str]:
        return [u for u in storage.list_uris(self.dir)
                if storage.basename(u).startswith(FILE_PREFIX) and u.endswith(".parquet")]

    def load(self) -> dict[str, dict]:
        """caption hash -> row (dict of STORED_ANSWER_SCHEMA columns) of everything answered so far
        (a caption answered twice, e.g. by a write retried after a lost reply, counts once)."""
        done: dict[str, dict] = {}
        for uri in self.file_uris():
            for row in read_table(uri, STORED_ANSWER_SCHEMA).to_pylist():
                done.setdefault(row["caption_hash"], row)
        return done

    def write(self, rows: list[dict], made_by: dict) -> str:
        for row in rows:
            row.setdefault("caption_hash", caption_hash(row["caption"]))
        uri = storage.join(self.dir, f"{FILE_PREFIX}{self.writer}-{self.seq:06d}-{uuid.uuid4().hex[:8]}.parquet")
        self.seq += 1
        write_table(uri, pa.Table.from_pylist(rows, schema=STORED_ANSWER_SCHEMA), STORED_ANSWER_SCHEMA,
                    LABELS_FORMAT + "/answers", LABELS_VERSION, made_by)
        return uri
