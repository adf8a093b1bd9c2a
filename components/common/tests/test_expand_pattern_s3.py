"""A brace pattern naming many shards on S3 is checked with one listing, not a request per name
(preflight of 10,000 shards: 10 listing pages instead of 10,000 HEAD requests)."""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

from latent_verbalizer.components.common import storage


@contextmanager
def s3_calls():
    """The S3 operations this process sends meanwhile, counted by name."""
    calls: Counter = Counter()

    def count(model, **_):
        calls.update([model.name])

    events = storage.s3_client().meta.events
    events.register("before-call.s3", count)
    try:
        yield calls
    finally:
        events.unregister("before-call.s3", count)


def test_brace_pattern_is_one_listing(s3_bucket):
    missing = {7, 19, 33}
    for i in range(40):
        if i not in missing:
            storage.write_bytes(f"{s3_bucket}/in/shard-{i:03d}.tar", b"x")
    storage.write_bytes(f"{s3_bucket}/in/shard-extra.tar", b"x")     # under the prefix, not named by the pattern
    storage.write_bytes(f"{s3_bucket}/in/shard-000.tar.idx", b"x")
    with s3_calls() as calls:
        found = storage.expand_pattern(s3_bucket + "/in/shard-{000..039}.tar")
    assert found == [f"{s3_bucket}/in/shard-{i:03d}.tar" for i in range(40) if i not in missing]
    assert calls == Counter({"ListObjectsV2": 1})
    minio = s3_bucket.replace("s3://", "minio://")
    assert storage.expand_pattern(minio + "/in/shard-{005..008}.tar") == [f"{minio}/in/shard-{i:03d}.tar" for i in (5, 6, 8)]
    assert storage.expand_pattern(s3_bucket + "/in/none-{000..009}.tar") == []


def test_one_name_and_globs_as_before(s3_bucket):
    storage.write_bytes(f"{s3_bucket}/in/a-000.tar", b"x")
    storage.write_bytes(f"{s3_bucket}/in/b-000.tar", b"x")
    assert storage.expand_pattern(f"{s3_bucket}/in/a-000.tar") == [f"{s3_bucket}/in/a-000.tar"]
    assert storage.expand_pattern(f"{s3_bucket}/in/{{a,b}}-*.tar") == [f"{s3_bucket}/in/a-000.tar", f"{s3_bucket}/in/b-000.tar"]
    assert storage.expand_pattern(f"{s3_bucket}/in/{{a,c}}-000.tar") == [f"{s3_bucket}/in/a-000.tar"]
    # names alone in their folders: a HEAD each, not a listing of the bucket
    with s3_calls() as calls:
        found = storage.expand_pattern(f"{s3_bucket}/{{in,out}}/a-000.tar")
    assert found == [f"{s3_bucket}/in/a-000.tar"] and calls == Counter({"HeadObject": 2})
