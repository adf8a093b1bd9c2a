import os

import pytest

from latent_verbalizer.components.common import storage


def test_roundtrip_and_listing_on_s3(s3_bucket):
    storage.write_bytes(s3_bucket + "/a/one.bin", b"1" * 10)
    storage.write_json(s3_bucket + "/a/b/two.json", {"x": 2})
    assert storage.read_bytes(s3_bucket + "/a/one.bin") == b"1" * 10
    assert storage.read_json(s3_bucket + "/a/b/two.json") == {"x": 2}
    assert storage.list_uris(s3_bucket + "/a") == [s3_bucket + "/a/b/two.json", s3_bucket + "/a/one.bin"]
    assert storage.expand_pattern(s3_bucket + "/a/*.bin") == [s3_bucket + "/a/one.bin"]
    assert storage.read_range(s3_bucket + "/a/one.bin", 3, 4) == b"1111"
    minio = s3_bucket.replace("s3://", "minio://")
    assert storage.read_bytes(minio + "/a/one.bin") == b"1" * 10


def test_multipart_upload_larger_than_part(s3_bucket):
    part = 5 * 1024 * 1024
    data = os.urandom(part * 2 + 12345)
    uri = s3_bucket + "/big.bin"
    with storage.open_write(uri, part_size=part) as f:
        for i in range(0, len(data), 1_000_000):
            f.write(data[i:i + 1_000_000])
        assert f.upload_id is not None, "a 2.x-part object must go as a multipart upload"
        assert not storage.exists(uri), "nothing is visible before the upload completes"
    assert storage.read_bytes(uri) == data


def test_failed_write_leaves_nothing(s3_bucket, tmp_path):
    for uri in (s3_bucket + "/half.bin", str(tmp_path / "half.bin")):
        with pytest.raises(ZeroDivisionError):
            with storage.open_write(uri, part_size=5 * 1024 * 1024) as f:
                f.write(os.urandom(6 * 1024 * 1024))
                1 / 0
        assert not storage.exists(uri)
    assert os.listdir(tmp_path) == []


def test_brace_expansion():
    assert storage.expand_braces("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert storage.expand_braces("{a,b}/{1..2}") == ["a/1", "a/2", "b/1", "b/2"]


def test_wrong_credentials_say_so(s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    storage._client_for.cache_clear()
    with pytest.raises(storage.StorageError, match="credentials"):
        storage.read_bytes(s3_bucket + "/nothing")


def test_object_replaced_mid_read_fails_clearly(s3_bucket):
    uri = s3_bucket + "/moving.bin"
    storage.write_bytes(uri, os.urandom(3 * 1024 * 1024))
    f = storage.open_read(uri)
    f.read(1024)
    storage.delete(uri)
    f.raw.body.close()  # the connection drops: the reader must try to resume
    with pytest.raises(storage.StorageError, match="disappeared"):
        f.read()


def test_a_failed_abort_is_logged_not_swallowed(s3_bucket, caplog):
    """Aborting a failed multipart upload can fail too (here: an upload the server does not know);
    the parts left behind are then reported, with the lifecycle rule that removes them."""
    writer = storage.MultipartWriter(s3_bucket + "/big.bin")
    writer.upload_id = "no-such-upload"
    with caplog.at_level("WARNING", logger="latent_verbalizer.components.common.storage"):
        writer.abort()
    (record,) = [r for r in caplog.records if "could not abort the multipart upload" in r.getMessage()]
    assert s3_bucket + "/big.bin" in record.getMessage() and "AbortIncompleteMultipartUpload" in record.getMessage()


def test_a_read_pinned_to_an_etag_gets_that_version_or_fails(s3_bucket):
    """``open_read(uri, etag=...)`` reads the version a HEAD saw (``s3_version``), or says the
    object changed since: the download cache records the ETag of exactly the bytes it copied."""
    uri = s3_bucket + "/v.bin"
    storage.write_bytes(uri, b"one")
    version = storage.s3_version(uri)
    assert version.size == 3
    with storage.open_read(uri, etag=version.etag) as f:
        assert f.read() == b"one"
    storage.write_bytes(uri, b"two")
    assert storage.s3_version(uri).etag != version.etag
    with pytest.raises(storage.StorageError, match="changed while being read"):
        storage.open_read(uri, etag=version.etag)
