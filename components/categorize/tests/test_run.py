"""``run_categorize`` / ``lverb categorize`` end to end with tiny-random-llama: dedup, S3 output,
resume after a killed run, replica processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latent_verbalizer.components.categorize.answer_store import STORED_ANSWER_SCHEMA
from latent_verbalizer.components.categorize.categorize import run_categorize
from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.contracts import AGGREGATE_SCHEMA, LABELS_SCHEMA
from latent_verbalizer.components.common.tables import read_table, table_metadata
from tests.captions_by_layer import write_captions

REPO = Path(__file__).resolve().parents[3]


def test_dedup_and_s3_output(sample, small_labels, s3_bucket):
    caps = sample(8, layers=[2, 21])
    by_layer = {2: caps[:4] + caps[:2], 21: caps[4:] + [caps[0], caps[5]]}     # 12 rows, 8 distinct
    write_captions(f"{s3_bucket}/captions/shard-000.parquet", by_layer)
    out = f"{s3_bucket}/labels-run"
    s = run_categorize([f"{s3_bucket}/captions/*.parquet"], out, model="tiny-random-llama", labels_uri=small_labels, batch_size=4)
    assert (s["captions"], s["unique_captions"], s["to_label"]) == (12, 8, 8)
    assert s["replica_stats"][0]["labelled"] == 8                      # each distinct caption labelled once
    labels = read_table(f"{out}/labels.parquet", LABELS_SCHEMA)
    assert sorted(labels.column("caption").to_pylist()) == sorted(set(caps))
    assert set(labels.column("model").to_pylist()) == {"tiny-random-llama"}
    agg = read_table(f"{out}/aggregate.parquet", AGGREGATE_SCHEMA)
    assert set(agg.column("layer").to_pylist()) == {2, 21}
    assert set(agg.column("n_captions").to_pylist()) <= {6}
    assert storage.exists(f"{out}/summary.json")
    # the tables explain themselves: the answer schemas (issue 12 item 1), and all the report needs
    from latent_verbalizer.components.categorize.answers import answer_bounds, answer_schema
    from latent_verbalizer.components.categorize.labelset import load_labelset
    from latent_verbalizer.components.categorize.merge_table import load_merge_table, merge_categories

    ls = load_labelset(small_labels)
    schemas = table_metadata(labels)["answer_schemas"]
    assert schemas["limits"] == {"max_parts": 3, "max_part_chars": 16, "max_labels": 2} and "word count" in schemas["rule"]
    for caption in caps:
        bounds = answer_bounds(caption, ls.limits)
        assert schemas["schemas"][bounds.key] == answer_schema(ls, bounds)
    statuses = labels.column("status").to_pylist()
    meta = table_metadata(agg)
    assert meta["status_counts"] == {x: statuses.count(x) for x in set(statuses)} == s["status_counts"]
    assert sum(meta["status_counts"].values()) == 8
    assert meta["category_map"] == load_merge_table() and meta["categories"] == merge_categories(load_merge_table())
    assert {k: sum(v.values()) for k, v in meta["layer_status_counts"].items()} == {"2": 6, "21": 6}
    assert meta["not_aggregated"] == ["unparseable", "truncated", "no_parts"]
    # a random model under 3-part caps hits them: those answers are flagged and counted
    limited = sum("answer_limit" in x for x in statuses)
    assert limited == sum(n for x, n in s["replica_stats"][0]["status_counts"].items() if "answer_limit" in x)
    # run again: everything is in the chunks, nothing is labelled
    again = run_categorize([f"{s3_bucket}/captions/shard-000.parquet"], out, model="tiny-random-llama", labels_uri=small_labels)
    assert again["resumed"] == 8 and again["to_label"] == 0 and "replica_stats" not in again


def test_resume_after_killed_run(sample, small_labels, tmp_path, one_thread_env):
    caps = sample(48, layers=range(0, 24, 2))
    captions = str(tmp_path / "caps.parquet")
    write_captions(captions, {5: caps})
    n_unique = len(set(caps))
    out = str(tmp_path / "out")
    cmd = [sys.executable, "-m", "latent_verbalizer.pipeline.cli", "categorize", "--captions", captions, "--out", out,
           "--model", "tiny-random-llama", "--labels", small_labels, "--batch-size", "4", "--answers-per-file", "4"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store_dir = tmp_path / "out" / "answers"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            stored = [f for _, _, fs in os.walk(store_dir) for f in fs if f.endswith(".parquet")]
            if len(stored) >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)                     # no clean-up, as a preempted pod
    finally:
        proc.wait()
    assert not (tmp_path / "out" / "labels.parquet").exists()
    done_before = sum(read_table(str(p), STORED_ANSWER_SCHEMA).num_rows for p in store_dir.rglob("answers-*.parquet"))
    assert 0 < done_before < n_unique
    s = run_categorize([captions], out, model="tiny-random-llama", labels_uri=small_labels, batch_size=4)
    assert s["resumed"] == done_before and s["to_label"] == n_unique - done_before
    labels = read_table(f"{out}/labels.parquet", LABELS_SCHEMA)
    assert labels.num_rows == n_unique and set(labels.column("caption").to_pylist()) == set(caps)
    # answers are deterministic: the resumed ones equal a fresh run's
    fresh = run_categorize([captions], str(tmp_path / "fresh"), model="tiny-random-llama", labels_uri=small_labels, batch_size=4)
    assert fresh["resumed"] == 0
    a = {r["caption"]: r["parts"] for r in labels.to_pylist()}
    b = {r["caption"]: r["parts"] for r in read_table(str(tmp_path / "fresh" / "labels.parquet"), LABELS_SCHEMA).to_pylist()}
    assert a == b


def test_replica_processes_split_the_captions(sample, small_labels, tmp_path, one_thread_env, monkeypatch):
    """Two replica processes (CPU, gloo) started by run_categorize, each taking its share
    through accelerate's ``split_between_processes`` (a layout of two CPU replicas planned)."""
    from latent_verbalizer.components.categorize import categorize
    from latent_verbalizer.components.categorize.llm.layout import Layout

    def two_cpu_replicas(*args, **kwargs):
        return Layout(mode="cpu", n_gpus=0, gpus_per_replica=0, replicas=2, groups=[[], []], max_memory=[{}, {}])

    monkeypatch.setattr(categorize, "plan_for_model", two_cpu_replicas)
    caps = list(dict.fromkeys(sample(12, layers=[10, 23])))
    captions = str(tmp_path / "caps.parquet")
    write_captions(captions, {10: caps})
    s = run_categorize([captions], str(tmp_path / "out"), model="tiny-random-llama", labels_uri=small_labels, batch_size=4)
    assert [st["labelled"] for st in s["replica_stats"]] == [len(caps) - len(caps) // 2, len(caps) // 2]
    writers = {p.name.split("-")[1] for p in (tmp_path / "out" / "answers").rglob("answers-*.parquet")}
    assert writers == {"r0", "r1"}
    assert read_table(str(tmp_path / "out" / "labels.parquet"), LABELS_SCHEMA).num_rows == len(caps)


def test_cli_errors_name_the_input(tmp_path, capsys):
    from latent_verbalizer.pipeline.cli import main

    assert main(["categorize", "--captions", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "o"),
                 "--model", "tiny-random-llama"]) == 2
    assert "nope.parquet" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["categorize", "--captions", "x", "--out", "y", "--batch-size", "0"])
    with pytest.raises(SystemExit):
        main(["categorize", "--captions", "x", "--out", "y", "--cpu-replicas", "0"])
    assert "--cpu-replicas: '0': use auto or a positive integer" in capsys.readouterr().err


def test_model_from_s3_prefix(s3_bucket, tmp_path, monkeypatch):
    """A model folder (safetensors + config + tokenizer) under an s3:// prefix loads offline."""
    import torch

    from latent_verbalizer.components.categorize.llm.loading import load_llm
    from latent_verbalizer.components.categorize.llm.offline_llms import (
        llama3_tokenizer,
        random_llama,
        tiny_llama_config,
    )

    tok = llama3_tokenizer()
    model = random_llama(tiny_llama_config(len(tok)), seed=3)
    local = tmp_path / "tiny"
    model.save_pretrained(local, safe_serialization=True)
    tok.save_pretrained(local)
    for f in local.iterdir():
        storage.write_bytes(f"{s3_bucket}/models/tiny/{f.name}", f.read_bytes())
    monkeypatch.setenv("LVERB_MODEL_CACHE", str(tmp_path / "cache"))
    loaded, tok2, name = load_llm(f"{s3_bucket}/models/tiny", torch.float32)
    ids = torch.tensor([tok.encode("a dog on a red sofa")])
    with torch.inference_mode():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert name == f"{s3_bucket}/models/tiny" and tok2.encode("a dog") == tok.encode("a dog")
