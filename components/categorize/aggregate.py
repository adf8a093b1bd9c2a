"""Per-layer category shares by the original study's method.

For each caption: take the FIRST label of every part, map it to a merged category
(labels not in the merge table count as UNKNOWN), turn the category counts into
percentages of the caption's parts. A layer's value for a category is the mean of those
percentages over the layer's captions. Captions without parts or whose answer did not
parse are left out (``n_captions`` counts the captions that were used).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..common import storage
from ..common.contracts import AGGREGATE_SCHEMA, NOT_AGGREGATED, UNKNOWN, part_category
from .answer_store import caption_keys
from .labelset import Part
from .merge_table import merge_categories


def status_in_aggregate(status: str) -> bool:
    """Whether a caption of this status counts in the shares (none of its flags is in NOT_AGGREGATED)."""
    return not any(flag in NOT_AGGREGATED for flag in status.split(";"))


def counts_in_aggregate(parts: Sequence[Part] | None, status: str) -> bool:
    return bool(parts) and status_in_aggregate(status)


def caption_shares(parts: Sequence[Part], category_of: dict[str, str]) -> dict[str, float]:
    """Percent of a caption's parts per merged category (by each part's first label)."""
    counts: dict[str, int] = defaultdict(int)
    for part in parts:
        counts[part_category(part.labels, category_of)] += 1
    n = sum(counts.values())
    return {c: 100.0 * k / n for c, k in counts.items()}


def aggregate(rows: Iterable[tuple[int, Sequence[Part] | None, str]], category_of: dict[str, str]) -> pa.Table:
    """``rows``: one ``(layer, parts, status)`` per caption occurrence (an image's caption at a
    layer; identical captions count once per occurrence). Returns the AGGREGATE_SCHEMA
    table: every (layer, category) of the merge table, layers ascending."""
    sums: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    n: dict[int, int] = defaultdict(int)
    layers: set[int] = set()
    for layer, parts, status in rows:
        layers.add(layer)
        if not counts_in_aggregate(parts, status):
            continue
        n[layer] += 1
        for cat, share in caption_shares(parts, category_of).items():
            sums[layer][cat] += share
    cats = merge_categories(category_of)
    out = {"layer": [], "category": [], "share_percent": [], "n_captions": []}
    for layer in sorted(layers):
        for cat in cats:
            out["layer"].append(layer)
            out["category"].append(cat)
            out["share_percent"].append(sums[layer][cat] / n[layer] if n[layer] else 0.0)
            out["n_captions"].append(n[layer])
    return pa.table(out).cast(AGGREGATE_SCHEMA)


def shares_by_layer(table: pa.Table) -> dict[int, dict[str, float]]:
    """``{layer: {category: share}}`` of an aggregate table (for reading and tests)."""
    out: dict[int, dict[str, float]] = defaultdict(dict)
    for layer, cat, share in zip(table.column("layer").to_pylist(), table.column("category").to_pylist(),
                                 table.column("share_percent").to_pylist()):
        out[layer][cat] = share
    return dict(out)


def layer_status_counts(rows: Iterable[tuple[int, Sequence[Part] | None, str]]) -> dict[int, dict[str, int]]:
    """``{layer: {status: caption rows}}`` (every caption occurrence, counted or not)."""
    out: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for layer, _, status in rows:
        out[layer][status] += 1
    return {layer: dict(sorted(c.items())) for layer, c in sorted(out.items())}


# ------------------------------------------------------------------ streamed from the tables

BATCH_ROWS = 65_536          # rows per Parquet batch read
LABELS_COLUMNS = ("caption", "parts", "status")
CAPTIONS_COLUMNS = ("layer", "caption")


@dataclass
class AggregateResult:
    """What ``aggregate_files`` makes: the AGGREGATE_SCHEMA table and the status counts its metadata carries."""

    table: pa.Table
    layer_status_counts: dict[int, dict[str, int]]   # {layer: {status: caption rows}}
    status_counts: dict[str, int]                    # {status: distinct captions of the labels tables}


@contextmanager
def _parquet_file(uri: str):
    """A ``pq.ParquetFile`` of any storage URI, read batch by batch: an S3 object is first copied
    (streamed) to a local temporary file, as a Parquet reader needs to seek."""
    if not storage.is_s3(uri):
        yield pq.ParquetFile(storage.local_path(uri))
        return
    with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:
        with storage.open_read(uri) as f:
            shutil.copyfileobj(f, tmp, 8 << 20)
        tmp.flush()
        yield pq.ParquetFile(tmp.name)


def iter_table_batches(uri: str, columns: Sequence[str], what: str) -> Iterator[pa.RecordBatch]:
    """The ``columns`` of a Parquet table (any storage URI), ``BATCH_ROWS`` rows at a time; a table
    without them is an error naming it (``what``: the contract's name for the table)."""
    with _parquet_file(uri) as f:
        missing = [c for c in columns if c not in f.schema_arrow.names]
        if missing:
            raise ValueError(f"{uri}: not a {what} table of the data contract, missing columns {missing}")
        yield from f.iter_batches(batch_size=BATCH_ROWS, columns=list(columns))


def table_metadata_of(uri: str) -> dict:
    """What made a Parquet table of the contracts (``tables.table_metadata``), from its footer alone."""
    with _parquet_file(uri) as f:
        raw = (f.schema_arrow.metadata or {}).get(b"latent_verbalizer")
    return json.loads(raw) if raw else {}


class _CategoryCodes:
    """First labels -> index of their merged category in ``merge_categories(category_of)``, column-wise."""

    def __init__(self, category_of: dict[str, str]):
        self.categories = merge_categories(category_of)
        index = {c: i for i, c in enumerate(self.categories)}
        self.labels = pa.array(list(category_of), pa.string())
        self.codes = np.array([index[c] for c in category_of.values()] + [index[UNKNOWN]], dtype=np.int64)
        self.empty = index[part_category([], category_of)]       # a part without labels counts as ""

    def __call__(self, first_labels: pa.Array) -> np.ndarray:
        where = pc.index_in(first_labels.fill_null(""), value_set=self.labels).fill_null(-1)
        return self.codes[where.to_numpy(zero_copy_only=False)]  # -1: the last entry, UNKNOWN

    def part_counts(self, parts: pa.Array) -> np.ndarray:
        """``[rows, categories]``: each caption's parts counted per merged category, by the part's
        FIRST label (``contracts.part_category``'s rule)."""
        parent = pc.list_parent_indices(parts).to_numpy(zero_copy_only=False)
        labels = pc.list_flatten(parts).flatten()[1]                  # each part's labels: list<string>
        first = pc.list_slice(labels, 0, 1)
        codes = np.full(len(labels), self.empty, dtype=np.int64)
        codes[pc.list_parent_indices(first).to_numpy(zero_copy_only=False)] = self(pc.list_flatten(first))
        counts = np.zeros((len(parts), len(self.categories)), dtype=np.int16)   # parts per category: < 32,768
        np.add.at(counts, (parent, codes), 1)
        return counts


class LabelLookup:
    """Every distinct caption of the labels tables, in numpy arrays: its 64-bit ``caption_hash``
    (sorted, with the caption's row), status, part count, and its categories with their part
    counts (the shares' terms; none for a caption left out of the shares). About 25 bytes a
    caption, whatever its text."""

    def __init__(self, labels_uris: Sequence[str], category_of: dict[str, str]):
        coder = _CategoryCodes(category_of)
        self.categories = coder.categories
        self.statuses: list[str] = []
        status_ids: dict[str, int] = {}
        counted_status: list[bool] = []
        keys, statuses, n_parts, lengths, cats, counts_of = [], [], [], [], [], []
        for uri in labels_uris:
            for batch in iter_table_batches(uri, LABELS_COLUMNS, "labels"):
                encoded = pc.dictionary_encode(batch.column("status"))
                for status in encoded.dictionary.to_pylist():
                    if status not in status_ids:
                        status_ids[status] = len(self.statuses)
                        self.statuses.append(status)
                        counted_status.append(status_in_aggregate(status))
                local = np.array([status_ids[s] for s in encoded.dictionary.to_pylist()], dtype=np.int16)
                status = local[encoded.indices.to_numpy(zero_copy_only=False)]
                counts = coder.part_counts(batch.column("parts"))
                n = counts.sum(axis=1)
                counts[~((n > 0) & np.asarray(counted_status, bool)[status])] = 0
                row, cat = np.nonzero(counts)                          # row by row, categories ascending
                keys.append(caption_keys(batch.column("caption")))
                statuses.append(status)
                n_parts.append(n.astype(np.int16))
                lengths.append(np.bincount(row, minlength=len(counts)).astype(np.int32))
                cats.append(cat.astype(np.int8))
                counts_of.append(counts[row, cat])
        key = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
        del keys
        order = np.argsort(key, kind="stable")
        key = key[order]
        first = np.ones(len(key), bool)
        first[1:] = key[1:] != key[:-1]                         # a caption in two tables: its first row counts
        self.keys = key[first]
        self.row = order[first].astype(np.int32 if len(order) < 2**31 else np.int64)
        del key, order, first
        self.status = np.concatenate(statuses) if statuses else np.zeros(0, np.int16)
        self.n_parts = np.concatenate(n_parts) if n_parts else np.zeros(0, np.int16)
        self.start = np.zeros(len(self.status) + 1, np.int64)
        np.cumsum(np.concatenate(lengths) if lengths else np.zeros(0, np.int64), out=self.start[1:])
        self.category = np.concatenate(cats) if cats else np.zeros(0, np.int8)
        self.count = np.concatenate(counts_of) if counts_of else np.zeros(0, np.int16)

    def rows_of(self, keys: np.ndarray, uri: str, captions: pa.Array) -> np.ndarray:
        """The labels row of each key; a caption the labels tables lack is an error naming it and the file."""
        pos = np.searchsorted(self.keys, keys)
        found = pos < len(self.keys)
        found[found] = self.keys[pos[found]] == keys[found]
        if not found.all():
            missing = captions[int(np.flatnonzero(~found)[0])].as_py()
            raise ValueError(f"{uri}: {int((~found).sum())} caption rows have no row in the labels tables (e.g. "
                             f"{missing!r}): give the labels of every partition, or re-run categorize to label them")
        return self.row[pos]

    def status_counts(self) -> dict[str, int]:
        counts = np.bincount(self.status[self.row].astype(np.int64), minlength=len(self.statuses))
        return dict(sorted((s, int(c)) for s, c in zip(self.statuses, counts) if c))


class _LayerSums:
    """Per layer and category, the sum of the captions' shares, added in caption row order (as
    ``aggregate`` adds them: the same floats, bit for bit); per layer, the captions counted and
    the caption rows per status."""

    def __init__(self, n_categories: int, n_statuses: int):
        self.sums = np.zeros((0, n_categories), np.float64)
        self.n = np.zeros(0, np.int64)
        self.status_rows = np.zeros((0, n_statuses), np.int64)
        self.layers: set[int] = set()

    def _grow(self, layers: np.ndarray) -> None:
        if len(layers) and layers.min() < 0:
            raise ValueError(f"layer {int(layers.min())} in a captions table: layers are 0-based block indices")
        top = int(layers.max()) + 1 if len(layers) else 0
        if top > len(self.n):
            extra = top - len(self.n)
            self.sums = np.vstack([self.sums, np.zeros((extra, self.sums.shape[1]))])
            self.n = np.concatenate([self.n, np.zeros(extra, np.int64)])
            self.status_rows = np.vstack([self.status_rows, np.zeros((extra, self.status_rows.shape[1]), np.int64)])

    def add(self, layers: np.ndarray, rows: np.ndarray, lookup: LabelLookup) -> None:
        """Caption rows at ``layers`` whose answers are the labels rows ``rows``."""
        self._grow(layers)
        self.layers.update(np.unique(layers).tolist())
        np.add.at(self.status_rows, (layers, lookup.status[rows].astype(np.int64)), 1)
        start = lookup.start[rows]
        lengths = lookup.start[rows + 1] - start                # 0: left out of the shares
        self.n += np.bincount(layers[lengths > 0], minlength=len(self.n))
        # every (row, category) term of the batch, rows in order: 100.0 * k / n, as caption_shares computes it
        within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        entries = np.repeat(start, lengths) + within
        shares = 100.0 * lookup.count[entries].astype(np.float64) / np.repeat(lookup.n_parts[rows], lengths).astype(np.float64)
        np.add.at(self.sums, (np.repeat(layers, lengths), lookup.category[entries].astype(np.int64)), shares)


def aggregate_files(captions_uris: Sequence[str], labels_uris: Sequence[str], category_of: dict[str, str]) -> AggregateResult:
    """``aggregate`` streamed from the tables themselves: the captions Parquet files (a row per
    (image, layer)) and the labels tables (a row per distinct caption; one or several, e.g. one per
    partition), read batch by batch. Memory: the lookup of the distinct captions (``LabelLookup``,
    ~25 bytes each) and one batch, not the rows. The table equals ``aggregate`` of the same rows, bit for bit."""
    lookup = LabelLookup(labels_uris, category_of)
    sums = _LayerSums(len(lookup.categories), len(lookup.statuses))
    for uri in captions_uris:
        for batch in iter_table_batches(uri, CAPTIONS_COLUMNS, "captions"):
            captions = batch.column("caption")
            rows = lookup.rows_of(caption_keys(captions), uri, captions)
            sums.add(batch.column("layer").to_numpy(zero_copy_only=False).astype(np.int64), rows, lookup)
    out = {"layer": [], "category": [], "share_percent": [], "n_captions": []}
    for layer in sorted(sums.layers):
        n = int(sums.n[layer])
        for ci, cat in enumerate(lookup.categories):
            out["layer"].append(layer)
            out["category"].append(cat)
            out["share_percent"].append(float(sums.sums[layer, ci]) / n if n else 0.0)
            out["n_captions"].append(n)
    layer_status = {layer: {s: int(c) for s, c in sorted(zip(lookup.statuses, sums.status_rows[layer])) if c}
                    for layer in sorted(sums.layers)}
    return AggregateResult(pa.table(out).cast(AGGREGATE_SCHEMA), layer_status, lookup.status_counts())
