"""Copies of object-storage files on local disk, for loaders that need a file path
(open_clip checkpoints, Hugging Face model folders).

One cache folder for all of them: ``$LVERB_MODEL_CACHE`` (default
``~/.cache/latent-verbalizer``). A download lands in a ``.partial`` file first and is
renamed when complete, so an interrupted one is never mistaken for a finished one; a file
already there with the object's size is reused.

Object keys become local paths only after a check: a key with ``..`` or ``.`` segments,
an empty segment (a doubled slash), a leading slash or a backslash is refused, so no key
can write outside the cache folder it belongs to.
"""

from __future__ import annotations

import hashlib
import logging
import os

from . import storage

log = logging.getLogger(__name__)

CACHE_ENV = "LVERB_MODEL_CACHE"
DEFAULT_CACHE = os.path.join("~", ".cache", "latent-verbalizer")
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


def _copy(uri: str, target: str) -> bool:
    """Download ``uri`` to ``target`` unless a file of its size is there; True when copied."""
    if os.path.exists(target) and os.path.getsize(target) == storage.size(uri):
        return False
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = target + ".partial"
    with storage.open_read(uri) as src, open(partial, "wb") as dst:
        while block := src.read(_COPY_BYTES):
            dst.write(block)
    os.replace(partial, target)
    return True


def download_object(uri: str) -> str:
    """A local copy of one ``s3://`` object (downloaded once); returns its path."""
    target = os.path.join(cache_root(), "objects", _slot(uri), storage.basename(uri))
    if _copy(uri, target):
        log.info("downloaded %s -> %s", uri, target)
    return target


def download_prefix(uri: str, suffixes: tuple[str, ...] | None = None) -> str:
    """A local copy of every object under an ``s3://`` prefix (only names ending in one of
    ``suffixes`` when given), keeping the key layout below the prefix; returns the folder.
    Every key is checked before anything is written."""
    prefix = uri.rstrip("/") + "/"
    dest = os.path.join(cache_root(), "prefixes", _slot(uri))
    objects = [u for u in storage.list_uris(prefix) if suffixes is None or u.endswith(suffixes)]
    targets = [(u, safe_local_path(dest, u[len(prefix):], uri)) for u in objects]
    copied = sum(_copy(u, t) for u, t in targets)
    log.info("%s -> %s (%d files, %d downloaded)", uri, dest, len(targets), copied)
    return dest
