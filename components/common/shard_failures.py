"""Which failures of one shard are the shard's own (record it, the run goes on) and which are
of the moment or of the whole run (raise, so Kubeflow's retry runs the step again, or the run
stops and says why).

A shard's own failure does not change when the step runs again: the file is not a tar, it
holds no usable image, its output folder holds another shard's or other parameters' results,
its features' checksums do not match. Retrying costs a GPU pod and gives the same error, so
the pipeline records the shard as failed (``contracts.FailedShard``) and the other shards go
on. Everything else is raised: a network that kept breaking, credentials refused, out of
memory, a lost GPU (a retry may succeed), a bad parameter (every shard would fail alike) or a
bug.
"""

from __future__ import annotations

from . import storage
from .features import CorruptChunkError
from .tar_samples import ShardError


class OutputRefusedError(ValueError):
    """A shard's output folder already holds another shard's or other parameters' results:
    they are never mixed, and the shard is refused (use another storage prefix)."""


def is_bad_shard(error: BaseException) -> bool:
    """True when ``error`` is the shard's own and retrying cannot change it."""
    if isinstance(error, (ShardError, CorruptChunkError, OutputRefusedError)):
        return True  # not a tar, truncated, no usable image; damaged features; a refused output folder
    if isinstance(error, (storage.ObjectNotFoundError, FileNotFoundError)):
        return True  # the shard (or its features) is not there
    if isinstance(error, storage.StorageError):
        # a local path that is not there; anything else (network, credentials, an object that
        # changed while read) is of the moment or of the cluster, not of this shard
        return isinstance(error.__cause__, FileNotFoundError)
    return False
