"""The S3 server restarted in the middle of a categorize run: the run (or its re-run)
finishes, and every caption is labelled and stored exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from latent_verbalizer.components.categorize.answer_store import STORED_ANSWER_SCHEMA
from latent_verbalizer.components.categorize.categorize import run_categorize
from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.contracts import LABELS_SCHEMA
from latent_verbalizer.components.common.tables import read_table
from tests.captions_by_layer import write_captions

REPO = Path(__file__).resolve().parents[3]



def test_s3_restart_mid_run(own_s3_server, sample, small_labels, tmp_path, one_thread_env):
    caps = sample(48, layers=range(1, 24, 2))
    n_unique = len(set(caps))
    captions = str(tmp_path / "caps.parquet")
    write_captions(captions, {7: caps})
    storage.ensure_bucket("s3://restart/x")
    out = "s3://restart/labels"
    cmd = [sys.executable, "-m", "latent_verbalizer.pipeline.cli", "categorize", "--captions", captions, "--out", out,
           "--model", "tiny-random-llama", "--labels", small_labels, "--batch-size", "4", "--answers-per-file", "4"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and not storage.list_uris(f"{out}/answers"):
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before the server could be restarted"
        own_s3_server.restart()
        first_rc = proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    storage._client_for.cache_clear()
    stored = [u for u in storage.list_uris(f"{out}/answers") if u.endswith(".parquet")]
    stored_before = sum(read_table(u, STORED_ANSWER_SCHEMA).num_rows for u in stored)
    assert stored_before >= 4
    if first_rc != 0:              # the outage outlasted the client's retries: the re-run resumes
        summary = run_categorize([captions], out, model="tiny-random-llama", labels_uri=small_labels, batch_size=4,
                                 answers_per_file=4)
        assert summary["resumed"] == stored_before and summary["resumed"] + summary["to_label"] == n_unique
    labels = read_table(f"{out}/labels.parquet", LABELS_SCHEMA)
    assert labels.num_rows == n_unique and sorted(labels.column("caption").to_pylist()) == sorted(set(caps))
    stored_rows = [r for u in storage.list_uris(f"{out}/answers") if u.endswith(".parquet")
                   for r in read_table(u, STORED_ANSWER_SCHEMA).to_pylist()]
    hashes = [r["caption_hash"] for r in stored_rows]
    assert len(hashes) == len(set(hashes)) == n_unique          # each caption labelled and stored exactly once
