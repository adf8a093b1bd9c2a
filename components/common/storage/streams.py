"""Streams over storage: a reader that resumes a broken S3 download where it stopped, and
writers whose object appears only once complete (a local file renamed into place, an S3
multipart upload completed). Exported by the package (``storage.open_read``, ``storage.open_write``)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

from . import (
    DEFAULT_PART_SIZE,
    MAX_ATTEMPTS,
    PARTIAL_PREFIX,
    ObjectNotFoundError,
    StorageError,
    _s3_call,
    _stream_errors,
    is_s3,
    local_path,
    parse_s3,
    s3_client,
)

log = logging.getLogger(__name__)


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
        self.body: Any = None
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
