"""The S3 read retries what a network can do (a body cut mid-way), never a programming error."""

from __future__ import annotations

import pytest

from latent_verbalizer.components.common import storage


def test_a_value_error_in_a_read_is_raised_at_once_not_retried(s3_bucket, monkeypatch):
    uri = s3_bucket + "/obj.bin"
    storage.write_bytes(uri, bytes(range(256)) * 64)
    sleeps = []
    monkeypatch.setattr(storage.time, "sleep", sleeps.append)  # records the retry back-off, if any
    with storage.open_read(uri) as f:
        raw = f.raw
        # a caller's bug: a buffer of 4-byte items where bytes belong
        wrong = memoryview(bytearray(16)).cast("I")
        with pytest.raises(ValueError, match="memoryview assignment") as err:
            raw.readinto(wrong)
        assert not isinstance(err.value, storage.StorageError)
        assert sleeps == [], "a programming error must not be retried with back-off"
