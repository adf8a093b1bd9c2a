"""A shard's feature chunks on storage: what an earlier run left (the chunks a crashed run
wrote, the manifest of a finished one, both checked against this run's parameters), the next
chunk's number, and the background writers that put chunks out while the next batch computes."""

from __future__ import annotations

import json
import queue
from concurrent.futures import ThreadPoolExecutor

import torch

from ..common import storage
from ..common.contracts import ChunkInfo, FeatureManifest
from ..common.features import digest_feature_chunk, read_chunk_header, read_manifest
from ..common.shard_failures import OutputRefusedError

CHUNK_PREFIX = "chunk-"


def parameters_fingerprint(model: str, pretrained: str, layers: list[int], dtype: str) -> dict:
    """What makes two extractions of a shard the same: compared on re-runs, stored in every chunk."""
    return {"model": model, "pretrained": pretrained, "layers": layers, "dtype": dtype}


class ChunkWriters:
    """Background writers: chunks go to storage while the next batch computes.

    Holds ``n_writers + 1`` pinned host buffers (one filling, the rest writing), so host
    memory is bounded whatever the shard size.
    """

    def __init__(self, n_writers: int):
        self.pool = ThreadPoolExecutor(max_workers=n_writers)
        self.free = queue.Queue()
        self.futures = []
        self.n_buffers = n_writers + 1

    def buffers(self, shape_by_layer: dict[int, tuple], dtype: torch.dtype, pin: bool):
        for _ in range(self.n_buffers):
            self.free.put({layer: torch.empty(shape, dtype=dtype, pin_memory=pin) for layer, shape in shape_by_layer.items()})

    def take(self) -> dict[int, torch.Tensor]:
        return self.free.get()

    def submit(self, fn, buffers, *args):
        """Write in the background; a write that already failed is raised here, so a broken
        destination stops the shard at the next batch, not after the whole shard computed."""
        for f in self.futures:
            if f.done() and f.exception() is not None:
                raise f.exception()

        future = self.pool.submit(fn, *args)
        # released once the future holds its result or error, so whoever takes this buffer next sees it
        future.add_done_callback(lambda _: self.free.put(buffers))
        self.futures.append(future)

    def drain(self) -> list:
        results = [f.result() for f in self.futures]
        self.futures = []
        return results

    def close(self):
        self.pool.shutdown(wait=True)


def existing_chunks(shard_dir: str, shard_uri: str, fingerprint: dict) -> list[tuple[ChunkInfo, list[str]]]:
    """Chunks a crashed run left: (info, image keys). Refuses chunks of other parameters or
    another shard; removes the temporary files of writes that never completed. Call only with
    the folder's write lease held: the partial files are then a dead writer's, never a live one's."""
    out = []
    if not storage.exists(shard_dir) and not storage.is_s3(shard_dir):
        return out
    for uri in storage.list_uris(shard_dir):
        name = storage.basename(uri)
        if name.startswith(storage.PARTIAL_PREFIX):
            storage.delete(uri)  # a local write killed mid-way (S3 multipart uploads leave no object)
            continue
        if not (name.startswith(CHUNK_PREFIX) and name.endswith(".safetensors")):
            continue
        header = read_chunk_header(uri)
        if header.metadata.get("shard", shard_uri) != shard_uri:
            raise OutputRefusedError(f"{uri} holds images of {header.metadata['shard']}, not {shard_uri}: two shards "
                                     "share a name; rename one or use another --out")
        made = json.loads(header.metadata.get("parameters", "{}"))
        if made != fingerprint:
            raise OutputRefusedError(
                f"{shard_dir} holds chunks made with {made}, not {fingerprint}; "
                "use another --out for different parameters, or delete the folder"
            )
        nbytes, digests = digest_feature_chunk(uri)  # what is really there: the manifest must not vouch for a guess
        out.append((ChunkInfo(key=name, images=len(header.image_keys), bytes=nbytes, sha256=digests), header.image_keys))
    return out


def finished_manifest(shard_dir: str, shard_uri: str, fingerprint: dict) -> FeatureManifest | None:
    """The manifest of an earlier extraction of this shard with the same parameters, or None
    when there is none; an error when the folder holds another shard's or other parameters' features."""
    done = read_manifest(shard_dir)
    if done is None:
        return None
    if done.shard != shard_uri:
        raise OutputRefusedError(f"{shard_dir} holds the features of {done.shard}, not {shard_uri}: two shards share "
                                 f"the name {storage.basename(shard_dir)!r}; rename one or use another --out")
    existing = parameters_fingerprint(done.model, done.pretrained, done.layers, done.dtype)
    if existing != fingerprint:
        raise OutputRefusedError(
            f"{shard_dir} already holds features made with {existing}, not {fingerprint}; "
            "use another --out for different parameters"
        )
    return done


def next_chunk_index(chunks: list[ChunkInfo]) -> int:
    """After the highest surviving chunk: writers finish out of order, so a killed run can
    leave chunk 3 without chunk 2; reusing a number would overwrite finished images."""
    return max((int(c.key[len(CHUNK_PREFIX):].split(".")[0]) for c in chunks), default=-1) + 1
