"""The write lease of an output folder, against the real S3 server (SeaweedFS) and a local folder:
one writer at a time, the others refused with a message naming the holder, an abandoned lease
taken over by exactly one writer, a live one kept alive by its renewals."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.storage.write_lease import (
    LEASE_NAME,
    LeaseHeldError,
    LeaseLostError,
    WriteLease,
)


@pytest.fixture(params=["s3", "local"])
def folder(request, tmp_path):
    if request.param == "s3":
        return request.getfixturevalue("s3_bucket") + "/prefix/features/shard-000000"
    return str(tmp_path / "prefix" / "features" / "shard-000000")


def lease_version(folder: str):
    """What changes with every renewal: the S3 object's ETag, the local file's mtime."""
    uri = storage.join(folder, LEASE_NAME)
    if storage.is_s3(uri):
        return storage.s3_version(uri).etag
    return os.stat(uri).st_mtime_ns


def poll(condition, what: str, limit_s: float = 90):
    """Wait until ``condition()`` is true (a guard against hanging, not a timing assertion)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.1)


def test_of_writers_racing_for_a_folder_exactly_one_wins_and_the_others_learn_who(folder):
    start = threading.Barrier(6)
    won, refused = [], []

    def writer(i):
        lease = WriteLease(folder, f"run-{i}", expiry_s=600)
        start.wait()
        try:
            lease.acquire()
            won.append(lease)
        except LeaseHeldError as e:
            refused.append(str(e))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 5
    holder = won[0].holder
    for message in refused:
        assert f"run {holder.run_id} on host {holder.host} (pid {holder.pid})" in message
        assert "own storage_prefix" in message and "wait for the other run to finish" in message
    won[0].release()
    assert not storage.exists(storage.join(folder, LEASE_NAME))
    with WriteLease(folder, "run-later", expiry_s=600):    # released: the next writer gets it
        pass


def test_an_abandoned_lease_is_taken_over_and_its_old_holder_stops(folder):
    # A holder that never renews (as a pod that was killed): renewals only every hour.
    stale = WriteLease(folder, "run-dead", expiry_s=2, renew_every_s=3600)
    stale.acquire()
    with pytest.raises(LeaseHeldError, match="run run-dead"):
        WriteLease(folder, "run-new", expiry_s=600).acquire()      # not yet expired for this one

    taker = WriteLease(folder, "run-new", expiry_s=2)

    def taken() -> bool:
        try:
            taker.acquire()
            return True
        except LeaseHeldError:
            return False

    poll(taken, "the abandoned lease taken over")
    with pytest.raises(LeaseHeldError, match="run run-new"):     # the new holder is live and renews
        WriteLease(folder, "run-third", expiry_s=600).acquire()
    with pytest.raises(LeaseLostError, match="lost its lease"):
        stale.ensure_held()
    stale.release()                                               # must not delete the taker's lease
    assert storage.exists(storage.join(folder, LEASE_NAME))
    taker.ensure_held()
    taker.release()
    assert not storage.exists(storage.join(folder, LEASE_NAME))


def test_of_two_writers_taking_over_one_abandoned_lease_only_one_wins(folder):
    stale = WriteLease(folder, "run-dead", expiry_s=1, renew_every_s=3600)
    stale.acquire()
    poll(lambda: _age_over(folder, 2.5), "the lease aged past its expiry")
    start = threading.Barrier(4)
    won, refused = [], []

    def taker(i):
        lease = WriteLease(folder, f"run-{i}", expiry_s=2)
        start.wait()
        try:
            lease.acquire()
            won.append(lease)
        except LeaseHeldError as e:
            refused.append(e)

    threads = [threading.Thread(target=taker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 3
    won[0].release()


def _age_over(folder: str, seconds: float) -> bool:
    """True once the lease was last written more than ``seconds`` ago, on the store's own clock."""
    probe = WriteLease(folder, "probe", expiry_s=600)
    seen = probe._read()
    return seen is not None and seen.age_s > seconds


def test_a_live_holder_keeps_its_lease_past_the_expiry_by_renewing(folder):
    holder = WriteLease(folder, "run-long", expiry_s=4, renew_every_s=0.5)
    holder.acquire()
    versions = {lease_version(folder)}
    # a long write: the holder works on for more than twice the expiry
    poll(lambda: versions.add(lease_version(folder)) or len(versions) >= 18, "18 renewals (9 s, twice the expiry)")
    assert holder.renewals >= 17
    with pytest.raises(LeaseHeldError, match="run run-long"):
        WriteLease(folder, "run-other", expiry_s=4).acquire()
    holder.ensure_held()
    holder.release()


def test_the_same_pipeline_run_takes_its_earlier_attempts_lease_at_once(folder):
    """A KFP retry runs after the attempt before it died: its lease must not block the retry."""
    first_attempt = WriteLease(folder, "run-7", expiry_s=0.2, renew_every_s=3600)
    first_attempt.acquire()
    retry = WriteLease(folder, "run-7", expiry_s=600)     # the taker's expiry decides: not expired for it
    retry.acquire()
    with pytest.raises(LeaseHeldError, match="run run-7"):
        WriteLease(folder, "run-8", expiry_s=600).acquire()
    time.sleep(0.2)     # past half the first attempt's expiry: ensure_held checks with the store
    with pytest.raises(LeaseLostError):
        first_attempt.ensure_held()
    retry.release()


def test_a_lease_of_a_killed_process_on_this_host_is_taken_over_at_once(folder, s3_server):
    code = ("import sys, time; from latent_verbalizer.components.common.storage.write_lease import WriteLease; "
            "WriteLease(sys.argv[1], 'run-killed', expiry_s=600).acquire(); print('held', flush=True); time.sleep(600)")
    env = dict(os.environ, **s3_server.env(), PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", code, folder], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LeaseHeldError, match="run run-killed"):
            WriteLease(folder, "run-next", expiry_s=600).acquire()
    finally:
        proc.kill()
        proc.wait()
    with WriteLease(folder, "run-next", expiry_s=600) as lease:
        lease.ensure_held()


def test_a_bad_expiry_in_the_environment_is_refused_naming_it(monkeypatch, tmp_path):
    monkeypatch.setenv("LVERB_LEASE_S", "soon")
    with pytest.raises(ValueError, match="LVERB_LEASE_S='soon'"):
        WriteLease(str(tmp_path))
