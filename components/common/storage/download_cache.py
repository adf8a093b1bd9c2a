"""Copies of object-storage files on local disk, for loaders that need a file path
(open_clip checkpoints, Hugging Face model folders). Only ``s3://``/``minio://`` sources are
cached; callers hand local paths to the loaders as they are.

One cache folder for all of them: ``$LVERB_MODEL_CACHE`` (default
``~/.cache/latent-verbalizer``). On Kubeflow that folder is a ReadWriteMany volume (NFS
underneath) shared by every GPU step, and several pods fill it at once, so:

- A cached file is reused only when the version it was copied from is the object's version
  now: beside each file a small JSON record (under ``download-state/``, named by a hash of
  the file's path) holds the source's ETag and size and the file's inode, written after the
  file is renamed into place. An object changed on S3 (new ETag) is downloaded again; a file
  replaced by another writer after its record was written no longer matches its inode.
- Each download writes a file of its own (``download-state/<hash>.partial-<host>-<pid>-<random>``,
  created exclusively), fsynced and checked against the object's size before it is renamed
  into place: no two writers ever share a file, and a reader sees either the old file or the
  complete new one. The GET is pinned to the ETag the HEAD saw, so the bytes are the version
  the record names.
- One writer per file at a time: a lock per cached file, ``filelock.SoftFileLease`` on
  ``download-state/<hash>.lock``. ``flock``/``fcntl`` locks are not reliable on NFS
  (ReadWriteMany volumes); a soft lock is an exclusively created marker file, which NFS does
  honour. Its marker records host and pid (a holder that died on this host is taken over at
  once) and is refreshed by a heartbeat thread: a holder in another pod that was killed stops
  refreshing and is taken over after ``LEASE_S`` seconds, so a killed pod never blocks the
  others for good. The others wait for the holder and then reuse its file instead of
  downloading the same weights again. Correctness does not hang on the lock: should two
  writers ever overlap (a lease taken from a holder that froze), each still writes its own
  file and the records keep only a consistent pair.
- A download prefix's folder holds the prefix as it is now: files whose keys are gone from
  the prefix are removed (a stale shard or ``model.safetensors`` beside a new sharded set would
  otherwise be loaded). Partial files of dead writers are removed once untouched for
  ``LEASE_S`` seconds, by the next writer of the same file.

Object keys become local paths only after a check: a key with ``..`` or ``.`` segments,
an empty segment (a doubled slash), a leading slash or a backslash is refused, so no key
can write outside the cache folder it belongs to.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass

from filelock import SoftFileLease, Timeout

from .. import storage

log = logging.getLogger(__name__)

CACHE_ENV = "LVERB_MODEL_CACHE"
DEFAULT_CACHE = os.path.join("~", ".cache", "latent-verbalizer")
STATE_DIR = "download-state"
LEASE_S = 60.0      # every writer of a cache folder must use the same value (filelock refuses a mismatch)
_COPY_BYTES = 64 << 20


def cache_root() -> str:
    """The local cache folder: ``$LVERB_MODEL_CACHE`` or ``~/.cache/latent-verbalizer``."""
    return os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def _slot(uri: str) -> str:
    """A folder name of its own for each source URI (its hash, readable tail kept)."""
    tail = storage.basename(uri.rstrip("/")) or "root"
    return f"{hashlib.sha256(uri.rstrip('/').encode()).hexdigest()[:16]}-{tail}"


def safe_local_path(dest: str, rel_key: str, source: str) -> str:
    """``dest/rel_key`` for an object key relative to a downloaded prefix, or a ValueError
    when the key could land anywhere but inside ``dest`` (``..``, ``.``, ``//``, ``/...``, ``\\``)."""
    segments = rel_key.split("/")
    if (not rel_key or rel_key.startswith("/") or "\\" in rel_key
            or any(s in ("", ".", "..") for s in segments)):
        raise ValueError(f"object key {rel_key!r} under {source} would be written outside the cache folder {dest} "
                         "(keys with '..', '.', '//', a leading '/' or '\\' are refused): rename the object")
    target = os.path.join(dest, *segments)
    root = os.path.realpath(dest)
    if os.path.commonpath([root, os.path.realpath(target)]) != root:    # a symlink inside dest pointing out
        raise ValueError(f"object key {rel_key!r} under {source} resolves outside the cache folder {dest}")
    return target


@dataclass(frozen=True)
class CachedFile:
    """A file of the cache and its bookkeeping in ``download-state/``: the record of the
    version it holds, the lock its writers take and the prefix of their partial files."""
    path: str
    state: str      # <root>/download-state/<hash of path>

    @classmethod
    def at(cls, path: str) -> CachedFile:
        root = cache_root()
        rel = os.path.relpath(path, root)
        return cls(path, os.path.join(root, STATE_DIR, hashlib.sha256(rel.encode()).hexdigest()[:32]))

    @property
    def record(self) -> str:
        return self.state + ".json"

    @property
    def lock(self) -> str:
        return self.state + ".lock"

    @property
    def partial_prefix(self) -> str:
        return self.state + ".partial-"

    def holds(self, uri: str, version: storage.S3Version) -> bool:
        """True when the file is the complete copy of this version of ``uri``."""
        try:
            with open(self.record) as f:
                record = json.load(f)
            st = os.stat(self.path)
        except (FileNotFoundError, ValueError):
            return False
        return record == {"source": uri, "etag": version.etag, "size": version.size, "inode": st.st_ino} \
            and st.st_size == version.size

    @contextlib.contextmanager
    def locked(self):
        """Hold this file's lock (see the module docstring), waiting for another writer if need be."""
        os.makedirs(os.path.dirname(self.state), exist_ok=True)
        lock = SoftFileLease(self.lock, lease_duration=LEASE_S)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            log.info("waiting for another writer of %s (lock %s)", self.path, self.lock)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def download(self, uri: str, version: storage.S3Version) -> None:
        """Copy ``version`` of ``uri`` to a partial file of this writer's own, then rename it
        into place and record the version. Call with the lock held."""
        self._remove_dead_partials()
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        partial = f"{self.partial_prefix}{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            with storage.open_read(uri, etag=version.etag) as src, open(partial, "xb") as dst:
                while block := src.read(_COPY_BYTES):
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
            if (got := os.path.getsize(partial)) != version.size:
                raise storage.StorageError(f"{uri}: downloaded {got} bytes, the object has {version.size}; "
                                           "re-run once the object is stable")
            os.replace(partial, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(partial)
            raise
        storage.write_json(self.record, {"source": uri, "etag": version.etag, "size": version.size,
                                         "inode": os.stat(self.path).st_ino})

    def remove(self) -> None:
        """Delete the file and its record. Call with the lock held."""
        for path in (self.path, self.record):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    def _remove_dead_partials(self) -> None:
        """Partial files of this path untouched for ``LEASE_S`` seconds: their writers are gone
        (a live writer holds the lock and keeps writing)."""
        for path in glob.glob(glob.escape(self.partial_prefix) + "*"):
            with contextlib.suppress(FileNotFoundError):
                if time.time() - os.path.getmtime(path) > LEASE_S:
                    os.remove(path)
                    log.info("removed %s, left by a writer that stopped", path)


def _fetch(uri: str, target: str) -> bool:
    """Make ``target`` a copy of the object's current version; True when it was downloaded."""
    version = storage.s3_version(uri)
    cached = CachedFile.at(target)
    if cached.holds(uri, version):
        return False
    with cached.locked():
        if cached.holds(uri, version):     # another writer finished it while we waited
            return False
        cached.download(uri, version)
    return True


def download_object(uri: str) -> str:
    """A local copy of one ``s3://`` object (downloaded once per version); returns its path."""
    target = os.path.join(cache_root(), "objects", _slot(uri), storage.basename(uri))
    if _fetch(uri, target):
        log.info("downloaded %s -> %s", uri, target)
    return target


def _remove_files_gone(dest: str, keys: set[str]) -> int:
    """Delete the files of ``dest`` whose keys (relative to the prefix) are no longer listed."""
    removed = 0
    for folder, _, names in os.walk(dest):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.relpath(path, dest).replace(os.sep, "/") not in keys:
                cached = CachedFile.at(path)
                with cached.locked():
                    cached.remove()
                log.info("removed %s: no longer in the source prefix", path)
                removed += 1
    return removed


def download_prefix(uri: str, suffixes: tuple[str, ...] | None = None) -> str:
    """A local copy of every object under an ``s3://`` prefix (only names ending in one of
    ``suffixes`` when given), keeping the key layout below the prefix; returns the folder.
    Every key is checked before anything is written; files of keys no longer in the prefix
    are removed from the folder."""
    prefix = uri.rstrip("/") + "/"
    dest = os.path.join(cache_root(), "prefixes", _slot(uri))
    listed = storage.list_uris(prefix)
    objects = [u for u in listed if suffixes is None or u.endswith(suffixes)]
    targets = [(u, safe_local_path(dest, u[len(prefix):], uri)) for u in objects]
    removed = _remove_files_gone(dest, {u[len(prefix):] for u in listed})
    copied = sum(_fetch(u, t) for u, t in targets)
    log.info("%s -> %s (%d files, %d downloaded, %d removed)", uri, dest, len(targets), copied, removed)
    return dest
