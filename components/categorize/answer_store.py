"""The answer store: labelled captions are written in batches of rows (Parquet, keyed by
caption hash) under ``OUT/answers/RUN_KEY/`` as they are produced; a restarted run reads
them and labels only what is missing. ``RUN_KEY`` fingerprints the model, dtype and
labels/prompt file, so a changed set-up never reuses stale answers. Several writers
(replica processes) write side by side, each under its own name."""

from __future__ import annotations

import hashlib
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..common import storage
from ..common.contracts import LABEL_PART, LABELS_FORMAT, LABELS_VERSION, caption_hash
from ..common.tables import read_table, write_table

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
# What the labels table takes from a stored answer (``load``); the raw answer text, the longest
# column, stays in the files.
LOADED_COLUMNS = ("caption_hash", "caption", "parts", "model", "status")


def caption_keys(captions: pa.Array) -> np.ndarray:
    """The 64-bit ``caption_hash`` of each caption, as uint64 (each distinct text of the batch hashed once)."""
    encoded = pc.dictionary_encode(captions)
    texts = encoded.dictionary.to_pylist()
    sha256 = hashlib.sha256          # int(caption_hash(t), 16), without the hex text in between
    keys = np.fromiter((int.from_bytes(sha256(t.encode("utf-8")).digest()[:8], "big") for t in texts),
                       dtype=np.uint64, count=len(texts))
    return keys[encoded.indices.to_numpy(zero_copy_only=False)]


class AnsweredCaptions:
    """The caption hashes of the answer store, as a sorted uint64 array (8 bytes an answer, where
    a set of strings takes ~100): ``missing(captions)`` are those still to label, and
    ``caption_hash(c) in answered`` says whether ``c`` is answered."""

    def __init__(self, hashes: np.ndarray):
        hashes = np.sort(hashes)
        self.hashes = hashes[np.concatenate([[True], hashes[1:] != hashes[:-1]])] if len(hashes) else hashes

    def __len__(self) -> int:
        return len(self.hashes)

    def missing(self, captions: list[str], chunk: int = 65_536) -> list[str]:
        """The captions not answered yet, in their order (looked up ``chunk`` at a time, so no copy
        of all the captions is made)."""
        out: list[str] = []
        for start in range(0, len(captions), chunk):
            part = captions[start:start + chunk]
            keys = caption_keys(pa.array(part, pa.string()))
            pos = np.minimum(np.searchsorted(self.hashes, keys), max(len(self.hashes) - 1, 0))
            answered = self.hashes[pos] == keys if len(self.hashes) else np.zeros(len(keys), bool)
            out += [c for c, done in zip(part, answered.tolist()) if not done]
        return out

    def __contains__(self, caption_hash: str) -> bool:
        key = np.uint64(int(caption_hash, 16))
        i = int(np.searchsorted(self.hashes, key))
        return i < len(self.hashes) and self.hashes[i] == key


def run_key(model: str, dtype: str, labels_fingerprint: str) -> str:
    return hashlib.sha256(f"{model}|{dtype}|{labels_fingerprint}".encode()).hexdigest()[:12]


def _hash_column(uri: str) -> list[str]:
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(storage.read_bytes(uri)), columns=["caption_hash"])
    return table.column("caption_hash").to_pylist()


class AnswerStore:
    def __init__(self, out_uri: str, key: str, writer: str = "0"):
        self.dir = storage.join(out_uri, STORE_DIR, key)
        self.writer = writer
        self.seq = 0

    def file_uris(self) -> list[str]:
        return [u for u in storage.list_uris(self.dir)
                if storage.basename(u).startswith(FILE_PREFIX) and u.endswith(".parquet")]

    def load(self) -> dict[str, dict]:
        """caption hash -> row (dict of the LOADED_COLUMNS) of everything answered so far (a caption
        answered twice, e.g. by a write retried after a lost reply, counts once)."""
        done: dict[str, dict] = {}
        for uri in self.file_uris():
            table = read_table(uri, STORED_ANSWER_SCHEMA).select(list(LOADED_COLUMNS))
            for row in table.to_pylist():
                done.setdefault(row["caption_hash"], row)
        return done

    def answered_hashes(self) -> AnsweredCaptions:
        """Which captions are answered so far (what a restarted run needs to know), from the hash
        column alone."""
        hashes = [np.array([int(h, 16) for h in _hash_column(uri)], np.uint64) for uri in self.file_uris()]
        return AnsweredCaptions(np.concatenate(hashes) if hashes else np.zeros(0, np.uint64))

    def write(self, rows: list[dict], made_by: dict) -> str:
        for row in rows:
            row.setdefault("caption_hash", caption_hash(row["caption"]))
        uri = storage.join(self.dir, f"{FILE_PREFIX}{self.writer}-{self.seq:06d}-{uuid.uuid4().hex[:8]}.parquet")
        self.seq += 1
        write_table(uri, pa.Table.from_pylist(rows, schema=STORED_ANSWER_SCHEMA), STORED_ANSWER_SCHEMA,
                    LABELS_FORMAT + "/answers", LABELS_VERSION, made_by)
        return uri
