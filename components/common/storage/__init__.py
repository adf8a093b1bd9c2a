"""One way to read and write data, wherever it lives.

URIs: a local path, ``file:///path``, ``s3://bucket/key`` or KFP's ``minio://bucket/key``
(the same S3 API). S3 is spoken with boto3: the endpoint comes from
``AWS_ENDPOINT_URL`` (or ``S3_ENDPOINT_URL``), credentials from the environment
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, in Kubernetes a secret mapped to
env) -- never from arguments, never logged.

Writes are only visible once complete: local files are written to a temporary name and
renamed; S3 objects appear when their single PUT or their multipart upload completes
(an aborted multipart upload leaves nothing behind). Readers that need a whole set of
objects wait for its manifest, written last.

Transient S3 errors (throttling, 5xx, connection resets) are retried with backoff by
botocore's adaptive retry mode; a streaming read that breaks mid-body resumes from the
byte it had reached with a ranged GET.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import glob
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Iterator

S3_SCHEMES = ("s3://", "minio://")
DEFAULT_PART_SIZE = 16 * 1024 * 1024  # S3 minimum is 5 MiB; 16 MiB keeps part counts low
MAX_ATTEMPTS = 8
PARTIAL_PREFIX = ".partial-"  # local files being written; renamed when complete

log = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """A read or write that failed for a reason the user can act on."""


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """An S3 object that is not there (a local path raises FileNotFoundError itself)."""


# ---------------------------------------------------------------- URIs

def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEMES)


def local_path(uri: str) -> str:
    """The filesystem path of a local URI (plain path or ``file://``)."""
    if uri.startswith("file://"):
        return uri[len("file://"):]
    return uri


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str


def parse_s3(uri: str) -> S3Location:
    for scheme in S3_SCHEMES:
        if uri.startswith(scheme):
            bucket, _, key = uri[len(scheme):].partition("/")
            if not bucket:
                raise StorageError(f"{uri!r} has no bucket: write it as s3://BUCKET/PREFIX")
            return S3Location(bucket, key)
    raise StorageError(f"{uri!r} is not an s3:// or minio:// URI")


def join(base: str, *parts: str) -> str:
    """Join path parts onto a URI with ``/`` (S3) or the OS separator (local)."""
    if is_s3(base) or base.startswith("file://"):
        out = base.rstrip("/")
        for p in parts:
            out += "/" + p.strip("/")
        return out
    return os.path.join(base, *parts)


def basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def expand_braces(pattern: str) -> list[str]:
    """Expand webdataset-style braces: ``a-{000..003}.tar`` and ``{x,y}``."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    body = m.group(1)
    head, tail = pattern[: m.start()], pattern[m.end():]
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        items = body.split(",")
    out: list[str] = []
    for item in items:
        out.extend(expand_braces(head + item + tail))
    return out


def expand_pattern(pattern: str) -> list[str]:
    """All existing objects matching a brace/glob pattern, sorted.

    Braces are expanded first; ``*``/``?`` globs are matched against the listing of the
    directory (local) or prefix (S3). A pattern with neither must name an existing object.
    """
    found: list[str] = []
    names = expand_braces(pattern)
    s3_keys = _s3_keys_named(names) if len(names) > 1 else {}
    for pat in names:
        if pat in s3_keys:
            if s3_keys[pat]:
                found.append(pat)
        elif any(ch in pat for ch in "*?["):
            if is_s3(pat):
                loc = parse_s3(pat)
                prefix = re.split(r"[*?\[]", loc.key, maxsplit=1)[0]
                scheme = pat.split("://", 1)[0]
                for key in _s3_list_keys(loc.bucket, prefix):
                    if fnmatch.fnmatchcase(key, loc.key):
                        found.append(f"{scheme}://{loc.bucket}/{key}")
            else:
                found.extend(glob.glob(local_path(pat)))
        elif exists(pat):
            found.append(pat)
    return sorted(dict.fromkeys(found))


def _s3_keys_named(names: list[str]) -> dict[str, bool]:
    """For the S3 names among a brace pattern's expansion (without globs) that share a folder with
    others: whether each exists, from one listing of their common prefix per folder, instead of a
    HEAD request per name (10,000 shards: 10 listing pages instead of 10,000 requests). A name alone
    in its folder is left to a HEAD request (listing a whole bucket for it could cost more)."""
    by_folder: dict[tuple[str, str], list[str]] = {}
    for name in names:
        if is_s3(name) and not any(ch in name for ch in "*?["):
            loc = parse_s3(name)
            by_folder.setdefault((loc.bucket, loc.key.rpartition("/")[0]), []).append(name)
    out: dict[str, bool] = {}
    for (bucket, _), named in by_folder.items():
        if len(named) < 2:
            continue
        keys = [parse_s3(n).key for n in named]
        listed = set(_s3_list_keys(bucket, os.path.commonprefix(keys)))
        out.update((n, k in listed) for n, k in zip(named, keys))
    return out


# ---------------------------------------------------------------- S3 client

@functools.lru_cache(maxsize=None)
def _client_for(endpoint: str | None, _pid: int):
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "adaptive"},
        max_pool_connections=64,
        connect_timeout=10,
        read_timeout=120,
        s3={"addressing_style": "path"},
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


def s3_client():
    """A boto3 S3 client for the endpoint in the environment (one per process)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT_URL") or None
    return _client_for(endpoint, os.getpid())


def _s3_call(what: str, uri: str, fn, *args, **kwargs):
    """Run one S3 call, turning the errors users can fix into messages that say how."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    try:
        return fn(*args, **kwargs)
    except NoCredentialsError as e:
        raise StorageError(
            f"cannot {what} {uri}: no S3 credentials. Set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY in the environment (on Kubeflow: the s3-credentials secret)."
        ) from e
    except EndpointConnectionError as e:
        raise StorageError(
            f"cannot {what} {uri}: S3 endpoint unreachable ({e}). Check AWS_ENDPOINT_URL."
        ) from e
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            raise StorageError(
                f"cannot {what} {uri}: S3 refused the credentials ({code}). Check "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy."
            ) from e
        if code in ("NoSuchBucket",):
            raise StorageError(f"cannot {what} {uri}: bucket does not exist ({code}).") from e
        if code in ("NoSuchKey", "404", "NotFound") and what != "check":  # exists() asks with "check"
            raise ObjectNotFoundError(f"cannot {what} {uri}: no such object ({code})") from e
        raise


def _s3_list_keys(bucket: str, prefix: str) -> Iterator[str]:
    client = s3_client()
    paginator = client.get_paginator("list_objects_v2")
    pages = _s3_call("list", f"s3://{bucket}/{prefix}", lambda: list(paginator.paginate(Bucket=bucket, Prefix=prefix)))
    for page in pages:
        for obj in page.get("Contents", []):
            yield obj["Key"]


def ensure_bucket(uri: str) -> None:
    """Create the bucket of an S3 URI if it does not exist (dev/test object stores)."""
    loc = parse_s3(uri)
    client = s3_client()
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=loc.bucket)
    except ClientError:
        _s3_call("create bucket for", uri, client.create_bucket, Bucket=loc.bucket)


# ---------------------------------------------------------------- reads

def exists(uri: str) -> bool:
    if is_s3(uri):
        from botocore.exceptions import ClientError

        loc = parse_s3(uri)
        try:
            _s3_call("check", uri, s3_client().head_object, Bucket=loc.bucket, Key=loc.key)
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
    return os.path.exists(local_path(uri))


def size(uri: str) -> int:
    if is_s3(uri):
        return s3_version(uri).size
    return os.path.getsize(local_path(uri))


@dataclass(frozen=True)
class S3Version:
    """Which version of an S3 object: its ETag (quotes kept, as S3 sends it) and size."""
    etag: str
    size: int


def s3_version(uri: str) -> S3Version:
    """The ETag and size of an S3 object, from one HEAD request."""
    loc = parse_s3(uri)
    head = _s3_call("stat", uri, s3_client().head_object, Bucket=loc.bucket, Key=loc.key)
    return S3Version(etag=head["ETag"], size=int(head["ContentLength"]))


def read_bytes(uri: str) -> bytes:
    with open_read(uri) as f:
        return f.read()


def _stream_errors() -> tuple:
    """Errors of a response body cut mid-way: worth reading again from where it stopped.
    Only network errors: a ValueError or TypeError is a bug, raised at once, never retried."""
    from botocore.exceptions import ConnectionClosedError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError
    from urllib3.exceptions import ProtocolError

    return (ConnectionClosedError, IncompleteReadError, ResponseStreamingError, ReadTimeoutError, ProtocolError,
            ConnectionError)


def read_range(uri: str, start: int, length: int) -> bytes:
    """``length`` bytes from ``start``: one ranged GET on S3, a seek locally."""
    if length <= 0:
        return b""
    if is_s3(uri):
        loc = parse_s3(uri)
        for attempt in range(MAX_ATTEMPTS):
            try:
                resp = _s3_call(
                    "read", uri, s3_client().get_object,
                    Bucket=loc.bucket, Key=loc.key, Range=f"bytes={start}-{start + length - 1}",
                )
                data = resp["Body"].read()
                break
            except _stream_errors() as e:  # botocore retries the request, not a body cut mid-way
                if attempt == MAX_ATTEMPTS - 1:
                    raise StorageError(f"{uri}: connection kept breaking reading bytes {start}+{length}: {e}") from e
                time.sleep(min(2 ** attempt * 0.2, 10))
    else:
        with open(local_path(uri), "rb") as f:
            f.seek(start)
            data = f.read(length)
    if len(data) != length:
        raise StorageError(f"{uri}: wanted {length} bytes at {start}, got {len(data)} (object truncated?)")
    return data


def read_json(uri: str):
    return json.loads(read_bytes(uri))


def list_uris(prefix: str) -> list[str]:
    """Every object under a prefix (recursive), as URIs, sorted."""
    if is_s3(prefix):
        loc = parse_s3(prefix)
        scheme = prefix.split("://", 1)[0]
        key_prefix = loc.key.rstrip("/") + "/" if loc.key else ""
        return sorted(f"{scheme}://{loc.bucket}/{k}" for k in _s3_list_keys(loc.bucket, key_prefix))
    root = local_path(prefix)
    out = []
    for dirpath, _, files in os.walk(root):
        out.extend(os.path.join(dirpath, f) for f in files)
    return sorted(out)


# ---------------------------------------------------------------- writes

def delete(uri: str) -> None:
    if is_s3(uri):
        loc = parse_s3(uri)
        _s3_call("delete", uri, s3_client().delete_object, Bucket=loc.bucket, Key=loc.key)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(local_path(uri))


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object; it becomes visible only once complete."""
    with open_write(uri) as f:
        f.write(data)


def write_json(uri: str, obj) -> None:
    write_bytes(uri, json.dumps(obj, indent=1, sort_keys=False).encode())


# The streaming reader and writers use the client and URI helpers above; they live in
# ``streams`` and are part of this module's API.
from .streams import MultipartWriter as MultipartWriter  # noqa: E402
from .streams import open_read as open_read  # noqa: E402
from .streams import open_write as open_write  # noqa: E402
