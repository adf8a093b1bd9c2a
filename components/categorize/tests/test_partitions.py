"""Labelling in partitions (issue 20): identical captions in one partition, a killed partition
resumes from its own answer store, a finished one is not labelled again on a retry, and the
merged tables equal those of one categorize run over all captions (tiny-random-llama on CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latent_verbalizer.components.categorize.answer_store import STORED_ANSWER_SCHEMA
from latent_verbalizer.components.categorize.categorize import run_categorize
from latent_verbalizer.components.categorize.partitions.merge import merge_partitions
from latent_verbalizer.components.categorize.partitions.split import Partition, all_partitions
from latent_verbalizer.components.common.contracts import AGGREGATE_SCHEMA, LABELS_SCHEMA, parse_partition_count
from latent_verbalizer.components.common.tables import read_table, table_metadata
from tests.captions_by_layer import write_captions

REPO = Path(__file__).resolve().parents[3]

COLOURS = ["red", "blue", "green", "grey", "white", "black"]
THINGS = ["dog", "cat", "bus", "tree"]


def some_captions(n: int) -> list[str]:
    return [f"a {COLOURS[i % len(COLOURS)]} {THINGS[i // len(COLOURS) % len(THINGS)]}" for i in range(n)]


def test_identical_captions_share_a_partition_and_names_round_trip():
    caps = some_captions(24)
    parts = all_partitions(3)
    for caption in caps:
        assert sum(p.holds(caption) for p in parts) == 1
        assert [p.holds(caption) for p in parts] == [p.holds(str(caption)) for p in parts]
    assert all(any(p.holds(c) for c in caps) for p in parts), "24 captions spread over all 3 partitions"
    assert [p.name for p in parts] == ["partition-001-of-003", "partition-002-of-003", "partition-003-of-003"]
    assert [Partition.parse(p.name) for p in parts] == parts
    with pytest.raises(ValueError, match="'part-1' is not a partition name such as partition-001-of-003"):
        Partition.parse("part-1")
    assert parse_partition_count("4") == 4 and parse_partition_count(3.0) == 3
    with pytest.raises(ValueError, match="categorize_partitions='0' is not a partition count: give a whole number"):
        parse_partition_count("0")


def label_partition_in_process(captions: str, labels_root: str, partition: Partition, small_labels: str):
    """A categorize task of one partition, in a process of its own (so that it can be killed)."""
    code = ("import sys; from latent_verbalizer.components.categorize.categorize import run_categorize; "
            "from latent_verbalizer.components.categorize.partitions.split import Partition; "
            "run_categorize([sys.argv[1]], sys.argv[2], model='tiny-random-llama', labels_uri=sys.argv[3], batch_size=2, "
            "answers_per_file=2, partition=Partition.parse(sys.argv[4]))")
    out = partition.folder(labels_root)
    return subprocess.Popen([sys.executable, "-c", code, captions, out, small_labels, partition.name], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stored_files(folder) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("answers-*.parquet")}


def test_killed_partition_resumes_finished_one_is_kept_and_merge_equals_one_run(small_labels, tmp_path, one_thread_env):
    caps = some_captions(24)
    captions = str(tmp_path / "caps.parquet")
    write_captions(captions, {3: caps, 7: caps[:6]})     # 30 rows, 24 distinct: 6 captions at two layers
    labels_root = tmp_path / "labels"
    first, second = all_partitions(2)
    n_second = sum(second.holds(c) for c in caps)

    s = run_categorize([captions], first.folder(str(labels_root)), model="tiny-random-llama", labels_uri=small_labels,
                       batch_size=2, answers_per_file=2, partition=first)
    assert s["unique_captions"] == s["to_label"] == len(caps) - n_second
    finished = stored_files(labels_root / first.name)

    proc = label_partition_in_process(captions, str(labels_root), second, small_labels)
    store = labels_root / second.name / "answers"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and len(stored_files(store)) < 1:
            time.sleep(0.05)
        assert proc.poll() is None, "the partition's task ended before it could be killed"
        proc.send_signal(signal.SIGKILL)                     # a preempted pod: no clean-up
    finally:
        proc.wait()
    assert not (labels_root / second.name / "labels.parquet").exists()
    done_before = sum(read_table(p, STORED_ANSWER_SCHEMA).num_rows for p in stored_files(store))
    assert 0 < done_before < n_second
    with pytest.raises(FileNotFoundError, match="partition-002-of-002 has no labels table .* Retry the run"):
        merge_partitions([captions], str(labels_root), 2)

    # the run retried: every partition's task runs again
    again = [run_categorize([captions], p.folder(str(labels_root)), model="tiny-random-llama", labels_uri=small_labels,
                            batch_size=2, answers_per_file=2, partition=p) for p in (first, second)]
    assert (again[0]["resumed"], again[0]["to_label"]) == (len(caps) - n_second, 0)
    assert stored_files(labels_root / first.name) == finished, "the finished partition's answers are untouched"
    assert (again[1]["resumed"], again[1]["to_label"]) == (done_before, n_second - done_before)
    merged = merge_partitions([captions], str(labels_root), 2)
    assert (merged["captions"], merged["unique_captions"], merged["partitions"]) == (30, 24, 2)

    # the same tables as one categorize run over all the captions (answers are deterministic)
    whole = tmp_path / "whole"
    run_categorize([captions], str(whole), model="tiny-random-llama", labels_uri=small_labels, batch_size=2)
    for name, schema in (("labels.parquet", LABELS_SCHEMA), ("aggregate.parquet", AGGREGATE_SCHEMA)):
        ours, theirs = read_table(str(labels_root / name), schema), read_table(str(whole / name), schema)
        if name == "labels.parquet":  # a row per caption: the same rows, in partition order
            assert ours.num_rows == theirs.num_rows
            ours, theirs = ours.sort_by("caption"), theirs.sort_by("caption")
        assert ours.equals(theirs), name
        ours_meta, theirs_meta = table_metadata(ours), table_metadata(theirs)
        assert ours_meta["parameters"].pop("partitions") == 2
        assert json.dumps(ours_meta, sort_keys=True) == json.dumps(theirs_meta, sort_keys=True), name


def test_merge_refuses_a_partition_folder_of_another_count(small_labels, tmp_path, one_thread_env):
    caps = some_captions(6)
    captions = str(tmp_path / "caps.parquet")
    write_captions(captions, {0: caps})
    labels_root = str(tmp_path / "labels")
    for p in all_partitions(2):
        run_categorize([captions], p.folder(labels_root), model="tiny-random-llama", labels_uri=small_labels, batch_size=6,
                       partition=p)
    wrong = all_partitions(3)[0]
    os.rename(all_partitions(2)[0].folder(labels_root), wrong.folder(labels_root))
    with pytest.raises(ValueError, match="was not written as partition-001-of-003"):
        merge_partitions([captions], labels_root, 3)
