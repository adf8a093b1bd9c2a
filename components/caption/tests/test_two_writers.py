"""Two runs captioning the same shard into one storage prefix at once, with different settings
(real S3 server, real tiny-random-coca decoding).

Without a lease, run A's captions table could be overwritten by run B's while A's manifest,
written last, describes A's settings: a shard whose table and manifest disagree. With the lease
run B is refused, naming run A, and the shard's table and manifest are both A's.

The order is fixed by a gate around the real table writer: A stops after writing its table,
B goes as far as it can, then A writes its manifest.
"""

from __future__ import annotations

import threading

from latent_verbalizer.components.caption import caption as caption_module
from latent_verbalizer.components.caption.caption import CaptionSettings, run_caption
from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.contracts import CAPTIONS_SCHEMA
from latent_verbalizer.components.common.storage.write_lease import LEASE_NAME, LeaseHeldError
from latent_verbalizer.components.common.tables import read_table, table_metadata
from latent_verbalizer.components.extract.extract import ExtractSettings, run_extract
from tests.images import jpeg_shard

GUARD_S = 120   # only against a hang: every wait ends on an event the other writer sets


def test_a_second_run_captioning_the_same_shard_is_refused_and_the_shard_stays_consistent(
        s3_bucket, tmp_path, monkeypatch):
    storage.write_bytes(s3_bucket + "/in/c-000000.tar", open(jpeg_shard(str(tmp_path / "c.tar"), 3), "rb").read())
    run_extract([s3_bucket + "/in/c-000000.tar"], s3_bucket + "/features",
                ExtractSettings(model="tiny-random-coca", batch_size=4, device="cpu", layers="0,2"))
    out = s3_bucket + "/captions"

    real_write = caption_module.write_table
    a_at_write, b_ready, a_wrote, b_done = (threading.Event() for _ in range(4))

    def gated_write(*args, **kwargs):
        if threading.current_thread().name == "run-a":
            a_at_write.set()
            assert b_ready.wait(GUARD_S)
            real_write(*args, **kwargs)
            a_wrote.set()
            assert b_done.wait(GUARD_S)
            return None
        b_ready.set()
        assert a_wrote.wait(GUARD_S)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(caption_module, "write_table", gated_write)
    results = {}

    def run(name, seq_len):
        try:
            settings = CaptionSettings(batch_size=4, device="cpu", seq_len=seq_len, run_id=name)
            results[name] = run_caption(s3_bucket + "/features", out, settings)
        except Exception as e:
            results[name] = e
        finally:
            if name == "run-b":
                b_ready.set()
                b_done.set()

    a = threading.Thread(target=run, args=("run-a", 6), name="run-a")
    a.start()
    assert a_at_write.wait(GUARD_S), results.get("run-a")
    b = threading.Thread(target=run, args=("run-b", 8), name="run-b")
    b.start()
    b.join()
    a.join()

    shard_out = storage.join(out, "c-000000")
    manifest = storage.read_json(storage.join(shard_out, "manifest.json"))
    table = read_table(storage.join(shard_out, "captions.parquet"), CAPTIONS_SCHEMA)
    assert table_metadata(table)["parameters"] == manifest["parameters"]     # table and manifest of one run
    assert manifest["parameters"]["seq_len"] == 6 and manifest["rows"] == table.num_rows == 3 * 2
    assert isinstance(results["run-b"], LeaseHeldError), results["run-b"]
    assert "run run-a on host" in str(results["run-b"]) and "own storage_prefix" in str(results["run-b"])
    assert not storage.exists(storage.join(shard_out, LEASE_NAME))
