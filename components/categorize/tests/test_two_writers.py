"""Two runs labelling into one storage prefix's ``labels/`` (real S3 server, tiny-random-llama LLM):
while one run holds the folder's write lease, a second is refused before it labels anything,
naming the first; once the first is done, the second runs and reuses its stored answers."""

from __future__ import annotations

import pytest

from latent_verbalizer.components.categorize.categorize import run_categorize
from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.contracts import LABELS_SCHEMA
from latent_verbalizer.components.common.storage.write_lease import LEASE_NAME, LeaseHeldError, WriteLease
from latent_verbalizer.components.common.tables import read_table
from tests.captions_by_layer import write_captions


def test_a_second_run_labelling_the_same_prefix_is_refused_while_the_first_writes(sample, small_labels, s3_bucket):
    caps = list(dict.fromkeys(sample(6, layers=[3])))
    write_captions(f"{s3_bucket}/captions/shard-000.parquet", {3: caps})
    out = f"{s3_bucket}/shared-prefix/labels"
    first = WriteLease(out, "run-a")      # run A is labelling here (its lease, held as run_categorize holds it)
    first.acquire()
    try:
        with pytest.raises(LeaseHeldError, match="run run-a on host") as refused:
            run_categorize([f"{s3_bucket}/captions/shard-000.parquet"], out, model="tiny-random-llama",
                           labels_uri=small_labels, batch_size=4, run_id="run-b")
        assert "own storage_prefix" in str(refused.value)
        assert storage.list_uris(out) == [storage.join(out, LEASE_NAME)]   # B wrote nothing
    finally:
        first.release()

    summary = run_categorize([f"{s3_bucket}/captions/shard-000.parquet"], out, model="tiny-random-llama",
                             labels_uri=small_labels, batch_size=4, run_id="run-b")
    assert summary["unique_captions"] == len(caps)
    assert read_table(storage.join(out, "labels.parquet"), LABELS_SCHEMA).num_rows == len(caps)
    assert not storage.exists(storage.join(out, LEASE_NAME))
