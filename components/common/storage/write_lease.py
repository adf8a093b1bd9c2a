"""One writer per output folder: a lease that a run holds while it writes a shard's folder.

Two runs given the same ``storage_prefix`` can work on the same shard at once. Without a
lease they pick the same chunk numbers and overwrite each other's objects, and a resuming
writer deletes the other's partial files: the features read back fail their checksums.
So a writer first takes the folder's lease, a small JSON object ``<folder>/.lease`` naming
its holder (run id, host, pid, since when), and keeps it while it writes:

- Taken with an atomic create: on S3 a conditional PUT (``If-None-Match: *``), locally a
  complete file of the writer's own hard-linked to the lease name (fails if it exists, like
  ``O_CREAT | O_EXCL``, and never shows a half-written lease). Of two writers exactly one creates it; the other reads who
  holds it and is refused with a ``LeaseHeldError`` that names the holder and says how to
  share safely.
- Renewed by a background thread every ``expiry / 6`` seconds (S3: a PUT conditional on the
  ETag the holder last wrote, ``If-Match``; locally: the file's mtime, after checking the
  file is still ours). A holder that was killed stops renewing; once the lease is older than
  ``expiry`` (``$LVERB_LEASE_S``, default 180 s) another writer takes it over, again
  atomically (S3: ``If-Match`` on the old ETag; locally: rename away, then check it was the
  stale one), so of two takers only one wins.
- A lease of the same pipeline run (a KFP retry: it starts after the previous attempt died)
  or of a process of this host that no longer exists is taken over at once.
- A holder that finds its lease gone or taken (it froze past the expiry) stops: ``ensure_held``
  raises ``LeaseLostError`` before its next object is written.
- Released (deleted, on S3 only if the ETag is still ours) when the writer is done.

Age is measured on one clock: on S3 the server's (``Date`` of the response minus the
object's ``Last-Modified``), locally the file's mtime against this host's time (hosts that
share a volume keep their clocks in step with NTP; a skew of some seconds only shifts when
a dead holder's lease is taken over).

Readers never take nor check leases. SeaweedFS (the test server, and KFP's store since 2.16)
honours ``If-None-Match: *`` and ``If-Match`` on PUT and DELETE, checked by racing writers in
``common/tests/test_write_lease.py``; AWS S3 (since 2024) and MinIO document both conditions on PUT.
A store that ignored them would let two writers in again: run that test against it first.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from dataclasses import asdict
from email.utils import parsedate_to_datetime

from .. import storage
from .lease_holder import Holder, _Seen, lease_expiry_s, pid_alive

log = logging.getLogger(__name__)

LEASE_NAME = ".lease"
_CONFLICT_CODES = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
_MISSING_CODES = ("NoSuchKey", "404", "NotFound")


class LeaseHeldError(storage.StorageError):
    """Another live writer holds the lease of the folder this writer wants to write."""


class LeaseLostError(storage.StorageError):
    """This writer's lease expired and was taken over, or was removed, while it was writing."""


class WriteLease:
    """The lease of one output folder. Use as ``with WriteLease(folder, run_id): ...``, and call
    ``ensure_held()`` before each object written (it raises once the lease is lost)."""

    def __init__(self, folder: str, run_id: str = "", expiry_s: float | None = None,
                 renew_every_s: float | None = None, what: str = "this folder"):
        self.folder = folder
        self.uri = storage.join(folder, LEASE_NAME)
        self.run_id = run_id.strip()
        self.expiry_s = lease_expiry_s() if expiry_s is None else float(expiry_s)
        self.renew_every_s = renew_every_s or self.expiry_s / 6
        self.what = what
        self.holder = Holder.new(run_id)
        self._version: str | None = None          # S3: the ETag of our last write; local: our token
        self._confirmed = 0.0                     # monotonic time of the last successful write or renewal
        self._lost: str | None = None
        self._lock = threading.Lock()             # renewals from the thread and from ensure_held
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0

    # ------------------------------------------------------------ public

    def acquire(self) -> None:
        """Take the lease, or raise LeaseHeldError naming the live holder."""
        for _ in range(8):   # each pass ends in a win, a refusal, or a race lost to a writer that changed the lease
            if self._create():
                break
            seen = self._read()
            if seen is None:
                continue            # released between our create and our read: create again
            if seen.holder is not None and seen.holder.token == self.holder.token:
                self._version = seen.version    # our create went through, its reply was lost and the retry refused
                break
            if not self._may_take_over(seen):
                raise LeaseHeldError(self._refusal(seen))
            who = seen.holder.describe() if seen.holder else "an unreadable lease"
            if self._take_over(seen):
                log.info("%s: took over the lease of %s (last renewed %.0f s ago)", self.folder, who, seen.age_s)
                break
        else:
            raise LeaseHeldError(f"{self.uri}: the lease kept changing hands while this writer tried to take it; "
                                 "another run is writing here. " + self._advice())
        self._confirmed = time.monotonic()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease {storage.basename(self.folder)}",
                                        daemon=True)
        self._thread.start()

    def ensure_held(self) -> None:
        """Raise LeaseLostError if the lease is no longer ours. Renews first when the last renewal
        is older than half the expiry (this process was paused, or the renewals kept failing)."""
        if self._lost is None and time.monotonic() - self._confirmed > self.expiry_s / 2:
            self._renew()
        if self._lost is not None:
            raise LeaseLostError(f"{self.folder}: this writer lost its lease ({self._lost}), so another writer may "
                                 "be writing here now; stopped before writing more. " + self._advice())

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._lost is None and self._version is not None:
                with contextlib.suppress(Exception):   # an expired lease left behind costs the next writer one take-over
                    self._delete_own()
            self._version = None

    def __enter__(self) -> WriteLease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------ decisions and messages

    def _may_take_over(self, seen: _Seen) -> bool:
        holder = seen.holder
        if seen.age_s > self.expiry_s:
            return True
        if holder is None:
            return False
        if self.run_id and holder.run_id == self.run_id:
            return True     # an earlier attempt of this pipeline run (KFP retries after the attempt ended)
        return holder.host == self.holder.host and holder.pid != os.getpid() and not pid_alive(holder.pid)

    def _refusal(self, seen: _Seen) -> str:
        who = seen.holder.describe() if seen.holder else "another writer (its lease is unreadable)"
        left = max(self.expiry_s - seen.age_s, 0.0)
        return (f"{self.folder} is being written by {who}; its lease {self.uri} was renewed {seen.age_s:.0f} s ago "
                f"(if that run was killed, the lease expires in {left:.0f} s and a writer started after that takes "
                f"over). Two runs writing {self.what} at once would overwrite each other's objects. " + self._advice())

    def _advice(self) -> str:
        return ("To share a storage prefix safely, run one writer at a time: wait for the other run to finish "
                "(a later run with the same parameters reuses its finished shards), or give this run its own "
                "storage_prefix / --out. Readers (caption, report) may read at any time.")

    # ------------------------------------------------------------ renewal

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_every_s):
            if self._lost is not None:
                return
            try:
                self._renew()
            except Exception as e:    # a passing outage: ensure_held renews again before the next write
                log.warning("%s: could not renew the lease (%s); retrying", self.folder, e)

    def _renew(self) -> None:
        with self._lock:
            if self._lost is not None or self._version is None:
                return
            self.holder = Holder(**dict(asdict(self.holder), renewed=time.time()))
            reason = self._renew_s3() if storage.is_s3(self.uri) else self._renew_local()
            if reason is None:
                self._confirmed = time.monotonic()
                self.renewals += 1
            else:
                self._lost = reason
                log.error("%s: lease lost: %s", self.folder, reason)

    # ------------------------------------------------------------ S3

    def _create(self) -> bool:
        if storage.is_s3(self.uri):
            return self._put_s3(IfNoneMatch="*") is not None
        return self._create_local()

    def _read(self) -> _Seen | None:
        return self._read_s3() if storage.is_s3(self.uri) else self._read_local()

    def _take_over(self, seen: _Seen) -> bool:
        self.holder = Holder.new(self.run_id)
        if storage.is_s3(self.uri):
            return self._put_s3(IfMatch=seen.version) is not None
        return self._take_over_local(seen)

    def _put_s3(self, **condition) -> str | None:
        """A conditional PUT of our holder record: the new ETag, or None when the condition failed."""
        from botocore.exceptions import ClientError

        loc = storage.parse_s3(self.uri)
        try:
            resp = storage._s3_call("write", self.uri, storage.s3_client().put_object, Bucket=loc.bucket, Key=loc.key,
                                    Body=self.holder.encode(), ContentType="application/json", **condition)
        except storage.ObjectNotFoundError:
            return None         # If-Match on a lease deleted meanwhile
        except ClientError as e:
            if e.response.get("Error", {}).get("Code", "") in _CONFLICT_CODES:
                return None
            raise
        self._version = resp["ETag"]
        return self._version

    def _read_s3(self) -> _Seen | None:
        loc = storage.parse_s3(self.uri)
        try:
            resp = storage._s3_call("read", self.uri, storage.s3_client().get_object, Bucket=loc.bucket, Key=loc.key)
        except storage.ObjectNotFoundError:
            return None
        body = resp["Body"].read()
        server_now = parsedate_to_datetime(resp["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (server_now - resp["LastModified"]).total_seconds()
        return _Seen(Holder.decode(body), max(age, 0.0), resp["ETag"])

    def _renew_s3(self) -> str | None:
        if self._put_s3(IfMatch=self._version) is not None:
            return None
        seen = self._read_s3()
        if seen is not None and seen.holder is not None and seen.holder.token == self.holder.token:
            self._version = seen.version    # our renewal went through, its reply was lost and the retry refused
            return None
        who = seen.holder.describe() if seen is not None and seen.holder else "nobody (deleted)"
        return f"the lease object now names {who}"

    def _delete_own(self) -> None:
        if storage.is_s3(self.uri):
            loc = storage.parse_s3(self.uri)
            seen = self._read_s3()
            if seen is not None and seen.version == self._version:    # servers that ignore If-Match on DELETE
                storage._s3_call("delete", self.uri, storage.s3_client().delete_object, Bucket=loc.bucket,
                                 Key=loc.key, IfMatch=self._version)
            return
        seen = self._read_local()
        if seen is not None and seen.version == self._version:
            os.remove(storage.local_path(self.uri))

    # ------------------------------------------------------------ local paths

    def _create_local(self) -> bool:
        """Write our record to a file of our own, then link it to the lease name: ``link`` fails when
        the name exists (as ``O_CREAT | O_EXCL`` does, also on NFS) and a reader never sees it half-written."""
        path = storage.local_path(self.uri)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        own = f"{path}.new-{self.holder.token}"
        fd = os.open(own, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.holder.encode())
                f.flush()
                os.fsync(f.fileno())
            os.link(own, path)
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            return self._create_local_without_links(path)    # a filesystem without hard links
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(own)
        self._version = self.holder.token
        return True

    def _create_local_without_links(self, path: str) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:      # a reader in the instant before this write sees an unreadable lease: live
            f.write(self.holder.encode())
            f.flush()
            os.fsync(f.fileno())
        self._version = self.holder.token
        return True

    def _read_local(self) -> _Seen | None:
        path = storage.local_path(self.uri)
        try:
            with open(path, "rb") as f:
                data = f.read()
                mtime = os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            return None
        holder = Holder.decode(data)
        # an empty or unreadable file (a creator killed before its write) is told apart by content and age
        return _Seen(holder, max(time.time() - mtime, 0.0), holder.token if holder else f"raw:{data!r}")

    def _take_over_local(self, seen: _Seen) -> bool:
        """Move the stale lease aside (rename is atomic: of two takers one moves it), check that
        the moved file is the stale one, then create ours exclusively."""
        path = storage.local_path(self.uri)
        aside = f"{path}.stale-{self.holder.token}"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        try:
            with open(aside, "rb") as f:
                data = f.read()
            moved = Holder.decode(data)
            if (moved.token if moved else f"raw:{data!r}") != seen.version:
                # we moved a lease another taker had just created: put it back (unless yet another exists)
                with contextlib.suppress(FileExistsError):
                    os.link(aside, path)
                return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(aside)
        return self._create_local()

    def _renew_local(self) -> str | None:
        seen = self._read_local()
        if seen is None:
            return "the lease file was removed"
        if seen.version != self._version:
            return f"the lease was taken over by {seen.holder.describe() if seen.holder else 'another writer'}"
        os.utime(storage.local_path(self.uri))
        return None
