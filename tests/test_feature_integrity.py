"""Every byte of a feature chunk is checked against its manifest when it is read.

Features made by extract and then changed, cut or deleted on the object store before
caption reads them: caption fails that shard with a message that names the object (and
the manifest), and writes no captions for it.
"""

from __future__ import annotations

import pytest

from latent_verbalizer.components.caption.caption import CaptionSettings, run_caption
from latent_verbalizer.components.common import storage
from latent_verbalizer.components.common.features import (
    CorruptChunkError,
    iter_feature_chunks,
    read_chunk_header,
    read_manifest,
)
from latent_verbalizer.components.extract.extract import ExtractSettings, run_extract
from tests.images import jpeg_shard


@pytest.fixture
def features_on_s3(s3_bucket, tmp_path):
    shard = jpeg_shard(str(tmp_path / "f-000000.tar"), 3)
    uri = s3_bucket + "/in/f-000000.tar"
    storage.write_bytes(uri, open(shard, "rb").read())
    out = s3_bucket + "/features"
    run_extract([uri], out, ExtractSettings(model="tiny-random-coca", pretrained="random", layers="0,3", batch_size=8,
                                            device="cpu"))
    shard_dir = storage.join(out, "f-000000")
    (info,) = read_manifest(shard_dir).objects
    return out, shard_dir, storage.join(shard_dir, info.key)


def _caption(features: str, s3_bucket: str):
    return run_caption(features, s3_bucket + "/captions", CaptionSettings(precision="fp32", batch_size=8, seq_len=6,
                                                                          device="cpu"))


def _flip_byte(uri: str, offset: int) -> None:
    data = bytearray(storage.read_bytes(uri))
    data[offset] ^= 0x01
    storage.write_bytes(uri, bytes(data))


def test_untouched_features_read_and_caption(features_on_s3, s3_bucket):
    features, shard_dir, _ = features_on_s3
    (chunk,) = iter_feature_chunks(shard_dir)
    assert sorted(chunk.layers) == [0, 3]
    (manifest,) = _caption(features, s3_bucket)
    assert manifest["rows"] == 3 * 2


def test_a_changed_layer_fails_naming_the_object_and_the_manifest(features_on_s3, s3_bucket):
    features, shard_dir, chunk = features_on_s3
    header = read_chunk_header(chunk)
    begin, end = header.entries["layer_3"]["data_offsets"]
    _flip_byte(chunk, header.data_start + (begin + end) // 2)
    with pytest.raises(CorruptChunkError) as err:
        _caption(features, s3_bucket)
    message = str(err.value)
    assert chunk in message and "layer_3" in message and storage.join(shard_dir, "manifest.json") in message
    assert "re-run extract" in message
    assert storage.list_uris(s3_bucket + "/captions") == [], "no captions are written for the damaged shard"
    # Only the layer that was read is checked, and it is the damaged one: layer 0 alone still reads.
    (chunk0,) = iter_feature_chunks(shard_dir, layers=[0])
    assert list(chunk0.layers) == [0]


def test_a_changed_header_fails(features_on_s3, s3_bucket):
    features, _, chunk = features_on_s3
    _flip_byte(chunk, 20)  # inside the JSON header
    with pytest.raises(CorruptChunkError, match="part 'header'"):
        _caption(features, s3_bucket)


def test_a_cut_chunk_fails(features_on_s3, s3_bucket):
    features, _, chunk = features_on_s3
    storage.write_bytes(chunk, storage.read_bytes(chunk)[:-100])
    with pytest.raises((CorruptChunkError, storage.StorageError)) as err:
        _caption(features, s3_bucket)
    assert chunk in str(err.value) and "truncated" in str(err.value)


def test_a_deleted_chunk_fails_naming_it(features_on_s3, s3_bucket):
    features, _, chunk = features_on_s3
    storage.delete(chunk)
    with pytest.raises(Exception) as err:
        _caption(features, s3_bucket)
    assert chunk in str(err.value)


def test_captions_of_replaced_features_are_not_taken_as_done(features_on_s3, s3_bucket):
    """Re-extracting with another dtype changes the features' fingerprint: a caption re-run into the
    same place refuses the old captions instead of keeping them as done (issue 12 item 6)."""
    features, shard_dir, _ = features_on_s3
    (first,) = _caption(features, s3_bucket)
    (again,) = _caption(features, s3_bucket)  # same features: skipped as done
    assert again == first
    for uri in storage.list_uris(shard_dir):
        storage.delete(uri)
    run_extract([first["shard"]], features, ExtractSettings(model="tiny-random-coca", pretrained="random", layers="0,3",
                                                            batch_size=8, device="cpu", dtype="float32"))
    with pytest.raises(ValueError, match="features_fingerprint"):
        _caption(features, s3_bucket)
