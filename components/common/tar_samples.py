"""Reading webdataset shards: the one tar reader and webdataset's key rule.

A shard is a tar of samples; the files of one sample share a key (``KEY.jpg``,
``KEY.json``): the key is the path up to the first dot of the file name, as webdataset
itself splits it (``webdataset.tariterators.base_plus_ext``). Reading is a stream
(``tarfile`` in ``r|`` mode over ``storage.open_read``), so a shard on S3 is never
copied to disk first. Used by extract (the images to encode) and report (thumbnails and
reference captions).
"""

from __future__ import annotations

import logging
import tarfile
from dataclasses import dataclass, field
from typing import Iterator

from webdataset.tariterators import base_plus_ext

from . import storage
from .contracts import IMAGE_EXTENSIONS, SkippedSample

log = logging.getLogger(__name__)

# A sample's files are read whole into memory (and several samples are decoded at once): a
# member over this size is not read at all, and its sample is skipped with the reason, so a
# multi-GB file in an untrusted shard cannot run the step out of memory. 256 MB is 10x the
# largest photograph a camera writes (a 100 Mpx JPEG is ~25 MB), and over decode_image's
# 64 Mpx bound for any compressed image worth decoding.
DEFAULT_MAX_MEMBER_BYTES = 256 * 1024 * 1024


class ShardError(RuntimeError):
    """The shard itself is unreadable (not a tar, truncated archive): it fails alone."""


@dataclass
class Sample:
    key: str
    files: dict[str, bytes] = field(default_factory=dict)  # extension (lower case) -> bytes

    def image_bytes(self) -> tuple[str, bytes] | None:
        for ext in IMAGE_EXTENSIONS:
            if ext in self.files:
                return ext, self.files[ext]
        return None


def split_key(name: str) -> tuple[str, str] | None:
    """``(key, extension)`` of a member name by webdataset's rule; None for a name without
    an extension (webdataset ignores such a file). The extension is lower-cased."""
    key, ext = base_plus_ext(name)
    return None if key is None else (key, ext.lower())


def iter_samples(shard_uri: str, skipped: list[SkippedSample],
                 max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> Iterator[Sample]:
    """Samples of a shard in order, grouped by key.

    Samples without an image, samples with a file over ``max_member_bytes`` (never read),
    repeated keys and files without an extension are not yielded but appended to ``skipped``
    with the reason. An unreadable archive raises ShardError naming the shard.
    """
    seen: set[str] = set()
    current: Sample | None = None
    oversized: dict[str, str] = {}  # key -> why its sample is skipped (a file over the cap)

    def finish(sample: Sample | None):
        if sample is None:
            return None
        if sample.key in oversized:
            seen.add(sample.key)
            skipped.append(SkippedSample(sample.key, oversized.pop(sample.key)))
            return None
        if sample.key in seen:
            skipped.append(SkippedSample(sample.key, "duplicate key: an earlier sample of this shard has it"))
            return None
        seen.add(sample.key)
        if sample.image_bytes() is None:
            have = ", ".join(sorted(sample.files)) or "nothing"
            skipped.append(SkippedSample(sample.key, f"no image (jpg/jpeg/png/webp) in the sample; it has {have}"))
            return None
        return sample

    try:
        with storage.open_read(shard_uri) as stream:
            try:
                archive = tarfile.open(fileobj=stream, mode="r|*")
            except tarfile.ReadError as e:
                if "empty" in str(e):
                    log.warning("%s is empty", shard_uri)
                    return
                raise ShardError(f"{shard_uri} is not a tar archive ({e}); webdataset shards are .tar files") from e
            for member in archive:
                if not member.isfile():
                    continue
                split = split_key(member.name)
                if split is None:
                    skipped.append(SkippedSample(member.name, "file name without an extension: part of no sample "
                                                              "(webdataset's rule: KEY.EXTENSION)"))
                    continue
                key, ext = split
                if current is not None and key != current.key:
                    done = finish(current)
                    current = None
                    if done is not None:
                        yield done
                if current is None:
                    current = Sample(key)
                if ext in current.files:
                    skipped.append(SkippedSample(key, f"duplicate key: {key}.{ext} appears twice in the shard"))
                    continue
                if member.size > max_member_bytes:  # skipped over in the stream, never held in memory
                    oversized.setdefault(key, f"{member.name} is {member.size:,} bytes, over the {max_member_bytes:,}-byte "
                                              "cap on one file of a sample; shrink or leave out that file")
                    continue
                current.files[ext] = archive.extractfile(member).read()
            done = finish(current)
            if done is not None:
                yield done
    except (tarfile.TarError, EOFError) as e:
        raise ShardError(f"{shard_uri} is a broken tar archive ({type(e).__name__}: {e}); re-create the shard") from e
