"""Where a run's bulk data goes (the storage-prefix policy every step applies alike)."""

from __future__ import annotations

from . import join


def run_storage_prefix(storage_prefix: str, storage_root: str, run_id: str) -> str:
    """Where this run's bulk data goes: ``storage_prefix`` when the user names one (runs that
    share it reuse each other's finished work), else a prefix of the run's own,
    ``<storage_root>/<run id>``, so two runs with default parameters never write into one place."""
    if storage_prefix.strip():
        return storage_prefix.strip()
    if not storage_root.strip():
        raise ValueError("storage_root and storage_prefix are both empty: give storage_root (e.g. s3://bucket/runs; "
                         "each run writes under <storage_root>/<run id>) or a storage_prefix to share between runs")
    if not run_id.strip() or "{{" in run_id:
        raise ValueError(f"no run id to make this run's storage prefix from (got {run_id!r}): "
                         "give storage_prefix explicitly")
    return join(storage_root.strip(), run_id.strip())
