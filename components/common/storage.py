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
import io
import json
import logging
import os
import re
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, Iterator

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
    for pat in expand_braces(pattern):
        if any(ch in pat for ch in "*?["):
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


def _stream_errors() -> tuple:
    """Errors of a response body cut mid-way: worth reading again from where it stopped.
    Only network errors: a ValueError or TypeError is a bug, raised at once, never retried."""
    from botocore.exceptions import ConnectionClosedError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError
    from urllib3.exceptions import ProtocolError

    return (ConnectionClosedError, IncompleteReadError, ResponseStreamingError, ReadTimeoutError, ProtocolError,
            ConnectionError)


class _ResumingS3Reader(io.RawIOBase):
    """A forward-only stream over an S3 object that resumes after a broken connection.

    The object's ETag is pinned at open (or before it, when ``etag`` is given); if the object
    changes or disappears mid-read the read fails with a StorageError naming it, instead of
    silently mixing two versions.
    """

    def __init__(self, uri: str, etag: str | None = None):
        self.uri = uri
        self.loc = parse_s3(uri)
        self.pos = 0
        self.etag: str | None = etag
        self.length: int | None = None
        self.body: Any = None   # the GET's streaming body once opened
        self._open()

    def _open(self):
        from botocore.exceptions import ClientError

        kwargs = {"Bucket": self.loc.bucket, "Key": self.loc.key}
        if self.pos:
            kwargs["Range"] = f"bytes={self.pos}-"
        if self.etag:
            kwargs["IfMatch"] = self.etag
        try:
            resp = _s3_call("read", self.uri, s3_client().get_object, **kwargs)
        except ObjectNotFoundError as e:
            if self.length is None:  # never there: the plain "no such object" says it
                raise
            raise StorageError(f"{self.uri} disappeared while being read; re-run once the object is stable") from e
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "412"):
                raise StorageError(
                    f"{self.uri} disappeared or changed while being read ({code}); "
                    "re-run once the object is stable"
                ) from e
            raise
        if self.etag and resp.get("ETag") not in (None, self.etag):    # a server that ignored If-Match
            resp["Body"].close()
            raise StorageError(f"{self.uri} changed while being read (ETag {resp.get('ETag')}, "
                               f"wanted {self.etag}); re-run once the object is stable")
        if self.length is None:
            self.etag = self.etag or resp.get("ETag")
            self.length = int(resp["ContentLength"])
        self.body = resp["Body"]

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        for attempt in range(MAX_ATTEMPTS):
            try:
                chunk = self.body.read(len(buf))
                if not chunk and self.length is not None and self.pos < self.length:
                    raise ConnectionError(f"stream ended at byte {self.pos} of {self.length}")
                n = len(chunk)
                buf[:n] = chunk
                self.pos += n
                return n
            except _stream_errors() as e:
                if attempt == MAX_ATTEMPTS - 1:
                    raise StorageError(f"{self.uri}: connection kept breaking at byte {self.pos}: {e}") from e
                time.sleep(min(2 ** attempt * 0.2, 10))
                self._open()
        return 0

    def close(self):
        if self.body is not None:
            self.body.close()
        super().close()


def open_read(uri: str, etag: str | None = None) -> IO[bytes]:
    """A binary stream over the object, read as it arrives (never copied to disk first).
    With ``etag`` (S3 only), exactly that version is read, or a StorageError says it changed."""
    if is_s3(uri):
        return io.BufferedReader(_ResumingS3Reader(uri, etag), buffer_size=1 << 20)
    try:
        return open(local_path(uri), "rb")
    except FileNotFoundError as e:
        raise StorageError(f"{uri} does not exist") from e


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


class _LocalAtomicWriter(io.RawIOBase):
    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        fd, self.tmp = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=os.path.dirname(os.path.abspath(path)))
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        self.f = os.fdopen(fd, "wb")
        self.bytes_written = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        n = self.f.write(b)
        self.bytes_written += n
        return n

    def commit(self):
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self):
        self.f.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.tmp)


class MultipartWriter(io.RawIOBase):
    """Streams an S3 object as a multipart upload, parts uploaded concurrently.

    Memory is bounded: at most ``max_in_flight`` parts of ``part_size`` bytes are held
    (one filling, the rest uploading). Small objects (< one part) go as a single PUT.
    Nothing is visible until ``commit``; ``abort`` removes the uploaded parts.
    """

    def __init__(self, uri: str, part_size: int = DEFAULT_PART_SIZE, max_in_flight: int = 4):
        if part_size < 5 * 1024 * 1024:
            raise ValueError("S3 parts must be at least 5 MiB")
        self.uri = uri
        self.loc = parse_s3(uri)
        self.client = s3_client()
        self.part_size = part_size
        self.buf = bytearray()
        self.upload_id: str | None = None
        self.parts: list[Future] = []
        self.pool = ThreadPoolExecutor(max_workers=max_in_flight)
        self.slots = threading.Semaphore(max_in_flight)
        self.bytes_written = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        """Buffer at most one part; whole parts go straight from the caller's memory (one copy each)."""
        mv = memoryview(b).cast("B")
        n, pos = len(mv), 0
        self.bytes_written += n
        if self.buf:
            pos = min(self.part_size - len(self.buf), n)
            self.buf += mv[:pos]
            if len(self.buf) == self.part_size:
                self._submit(bytes(self.buf))
                self.buf = bytearray()
        while n - pos >= self.part_size:
            self._submit(bytes(mv[pos:pos + self.part_size]))
            pos += self.part_size
        if pos < n:
            self.buf += mv[pos:]
        return n

    def _submit(self, data: bytes):
        if self.upload_id is None:
            resp = _s3_call("write", self.uri, self.client.create_multipart_upload, Bucket=self.loc.bucket, Key=self.loc.key)
            self.upload_id = resp["UploadId"]
        number = len(self.parts) + 1
        self.slots.acquire()

        def upload():
            try:
                resp = _s3_call(
                    "write", self.uri, self.client.upload_part,
                    Bucket=self.loc.bucket, Key=self.loc.key, UploadId=self.upload_id, PartNumber=number, Body=data,
                )
                return {"PartNumber": number, "ETag": resp["ETag"]}
            finally:
                self.slots.release()

        self.parts.append(self.pool.submit(upload))

    def commit(self):
        try:
            if self.upload_id is None:
                _s3_call("write", self.uri, self.client.put_object, Bucket=self.loc.bucket, Key=self.loc.key, Body=bytes(self.buf))
                return
            if self.buf:
                self._submit(bytes(self.buf))
                self.buf = bytearray()
            parts = [f.result() for f in self.parts]
            _s3_call(
                "write", self.uri, self.client.complete_multipart_upload,
                Bucket=self.loc.bucket, Key=self.loc.key, UploadId=self.upload_id,
                MultipartUpload={"Parts": parts},
            )
        finally:
            self.pool.shutdown(wait=True)

    def abort(self):
        for f in self.parts:
            f.cancel()
        self.pool.shutdown(wait=True)
        if self.upload_id is not None:
            try:
                self.client.abort_multipart_upload(Bucket=self.loc.bucket, Key=self.loc.key, UploadId=self.upload_id)
            except Exception as e:  # the write's own error is what the caller sees; this one must not vanish
                log.warning("could not abort the multipart upload %s of %s (%s): its parts stay in the bucket until "
                            "a lifecycle rule removes them (manifests/README.md: AbortIncompleteMultipartUpload)",
                            self.upload_id, self.uri, e)


@contextlib.contextmanager
def open_write(uri: str, part_size: int = DEFAULT_PART_SIZE):
    """A writable stream whose object appears only when the ``with`` block succeeds.

    On an exception the partial object is removed (local temp file deleted, multipart
    upload aborted), so nothing half-written is ever visible.
    """
    if is_s3(uri):
        writer: MultipartWriter | _LocalAtomicWriter = MultipartWriter(uri, part_size=part_size)
    else:
        writer = _LocalAtomicWriter(local_path(uri))
    try:
        yield writer
        writer.commit()
    except BaseException:
        writer.abort()
        raise
