"""The aggregate streamed from the captions and labels tables (what the merge of partitioned
labelling uses) equals the in-memory ``aggregate`` of the same rows, bit for bit."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from latent_verbalizer.components.categorize import aggregate as agg
from latent_verbalizer.components.categorize.aggregate import aggregate, aggregate_files, layer_status_counts
from latent_verbalizer.components.categorize.answer_store import caption_keys
from latent_verbalizer.components.categorize.labelset import Part
from latent_verbalizer.components.categorize.merge_table import load_merge_table
from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.contracts import (
    CAPTIONS_FORMAT,
    CAPTIONS_SCHEMA,
    CAPTIONS_VERSION,
    LABELS_FORMAT,
    LABELS_SCHEMA,
    LABELS_VERSION,
    caption_hash,
)
from latent_verbalizer.components.common.tables import read_table, write_table

STATUSES = ["ok", "ok", "ok", "label_not_in_list", "part_not_in_caption;answer_limit", "no_parts", "truncated",
            "unparseable", "ok;answer_limit"]


def _labels(rng: random.Random, merge: dict[str, str], n: int) -> list[dict]:
    """Distinct captions with answers of every kind: 1 to 7 parts (shares such as 1/3 and 1/7 that
    do not add up exactly), unknown and empty first labels, parts without labels, no parts."""
    known = sorted(merge)
    rows = []
    for i in range(n):
        status = rng.choice(STATUSES)
        parts = []
        for _ in range(0 if status == "no_parts" else rng.randint(1, 7)):
            kind = rng.random()
            labels = ([] if kind < 0.05 else ["not-a-label"] if kind < 0.15 else [""] if kind < 0.2
                      else [rng.choice(known)] + rng.sample(known, rng.randint(0, 2)))
            parts.append({"text": f"p{rng.randint(0, 9)}", "labels": labels})
        rows.append({"caption": f"caption {i} " + "x" * rng.randint(0, 30), "parts": parts, "model": "m", "status": status})
    return rows


def _write_tables(base: str, seed: int = 0) -> tuple[list[str], str, list[tuple[int, list[Part], str]]]:
    """Three captions files (a row per (image, layer), captions repeating across images and layers)
    and one labels table; and the ``(layer, parts, status)`` rows the in-memory aggregate takes."""
    rng = random.Random(seed)
    labels = _labels(rng, load_merge_table(), 400)
    answer = {r["caption"]: ([Part(p["text"], tuple(p["labels"])) for p in r["parts"]], r["status"]) for r in labels}
    write_table(storage.join(base, "labels.parquet"), pa.Table.from_pylist(labels, schema=LABELS_SCHEMA),
                LABELS_SCHEMA, LABELS_FORMAT, LABELS_VERSION, {})
    captions_uris, per_row = [], []
    for shard in range(3):
        rows = []
        for image in range(60):
            for layer in (0, 5, 11, 23):
                caption = rng.choice(labels)["caption"]
                rows.append({"image_key": f"{shard}-{image}", "shard": f"s{shard}", "layer": layer, "caption": caption,
                             "token_ids": [1, 2], "n_tokens": 2, "stop": "eos", "entropy_bits": 1.0, "mean_logprob": -1.0})
                per_row.append((layer, *answer[caption]))
        uri = storage.join(base, f"captions-{shard}.parquet")
        write_table(uri, pa.Table.from_pylist(rows, schema=CAPTIONS_SCHEMA), CAPTIONS_SCHEMA,
                    CAPTIONS_FORMAT, CAPTIONS_VERSION, {})
        captions_uris.append(uri)
    return captions_uris, storage.join(base, "labels.parquet"), per_row


@pytest.mark.parametrize("batch_rows", [7, agg.BATCH_ROWS])
def test_streamed_aggregate_equals_in_memory(tmp_path, monkeypatch, batch_rows):
    monkeypatch.setattr(agg, "BATCH_ROWS", batch_rows)     # 7: batches cut through files and layers
    merge = load_merge_table()
    captions_uris, labels_uri, per_row = _write_tables(str(tmp_path))
    streamed = aggregate_files(captions_uris, [labels_uri], merge)
    expected = aggregate(per_row, merge)
    assert streamed.table.equals(expected)
    # bit for bit, not within a tolerance (the shares are sums of floats such as 100/3, added in row order)
    assert streamed.table.column("share_percent").to_pylist() == expected.column("share_percent").to_pylist()
    assert sum(s not in (0.0, 100.0) and s != round(s, 6) for s in expected.column("share_percent").to_pylist()) > 50
    assert streamed.layer_status_counts == layer_status_counts(per_row)
    assert sum(streamed.status_counts.values()) == 400


def test_streamed_aggregate_reads_s3_and_several_labels_tables(s3_bucket, tmp_path):
    """Labels in several tables (one per partition) on S3 give the same aggregate as one table."""
    merge = load_merge_table()
    captions_uris, labels_uri, per_row = _write_tables(s3_bucket, seed=1)
    labels = read_table(labels_uri, LABELS_SCHEMA)
    parts = [storage.join(s3_bucket, f"labels-{i}.parquet") for i in range(3)]
    for i, uri in enumerate(parts):
        with storage.open_write(uri) as f:
            pq.write_table(labels.slice(i * 150, 150), f)
    streamed = aggregate_files(captions_uris, parts, merge)
    assert streamed.table.equals(aggregate(per_row, merge))


def test_caption_keys_are_the_caption_hash():
    captions = ["a dog", "a dog", "", "une fenêtre ouverte", "a red car on the street 12345"]
    assert caption_keys(pa.array(captions)).tolist() == [int(caption_hash(c), 16) for c in captions]


def test_caption_without_label_is_named(tmp_path):
    captions_uris, labels_uri, _ = _write_tables(str(tmp_path))
    labels = storage.join(str(tmp_path), "few.parquet")
    pq.write_table(pq.read_table(labels_uri).slice(0, 10), storage.local_path(labels))
    with pytest.raises(ValueError, match=r"captions-0\.parquet: \d+ caption rows have no row in the labels tables"):
        aggregate_files(captions_uris, [labels], load_merge_table())


def test_missing_column_is_named(tmp_path):
    captions_uris, labels_uri, _ = _write_tables(str(tmp_path))
    with pytest.raises(ValueError, match=r"labels\.parquet: not a captions table .* missing columns \['layer'\]"):
        aggregate_files([labels_uri], [labels_uri], load_merge_table())


def test_merged_labels_table_is_the_partitions_rows_in_order(s3_bucket, monkeypatch):
    from latent_verbalizer.components.categorize.partitions.labels_merge import merge_label_tables
    from latent_verbalizer.components.common.tables import table_metadata

    monkeypatch.setattr(agg, "BATCH_ROWS", 64)
    _, labels_uri, _ = _write_tables(s3_bucket, seed=2)
    labels = read_table(labels_uri, LABELS_SCHEMA)
    parts = [storage.join(s3_bucket, f"part-{i}.parquet") for i in range(3)]
    for i, uri in enumerate(parts):
        write_table(uri, labels.slice(i * 150, 150), LABELS_SCHEMA, LABELS_FORMAT, LABELS_VERSION, {})
    out = storage.join(s3_bucket, "merged", "labels.parquet")
    assert merge_label_tables(parts, out, {"parameters": {"partitions": 3}}) == 400
    merged = read_table(out, LABELS_SCHEMA)
    assert merged.equals(labels.select(LABELS_SCHEMA.names).cast(LABELS_SCHEMA))
    assert table_metadata(merged) == {"format": LABELS_FORMAT, "version": LABELS_VERSION, "parameters": {"partitions": 3}}
