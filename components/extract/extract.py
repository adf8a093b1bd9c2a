"""Extract: every selected residual block's output tokens, for every image of a shard.

Per shard, images stream in (decoded and preprocessed with the model's own eval
transform in a thread pool), run through the vision tower block by block in batches,
and each selected block's output ``[n, tokens, width]`` goes out as a safetensors chunk
(one per batch) while the next batch computes. The manifest is written last.

GPU path: half precision (``--dtype``; the forward runs in bf16/fp16 autocast, fp32
when fp32 features are asked for), outputs cast on the GPU and copied asynchronously
into pinned host buffers, chunks written by background writers, batch size from free
memory, halved on out-of-memory.

Resume: chunks are complete objects whose headers list their image keys; a re-run
reads them, skips those images and writes only the rest. A finished shard (manifest
present with the same parameters) is skipped; different parameters are refused.
"""

from __future__ import annotations

import json
import logging
import os
import queue
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from ..common import storage
from ..common.contracts import (
    MANIFEST_NAME,
    ChunkInfo,
    FeatureManifest,
    SkippedSample,
    check_unique_shard_names,
    provenance,
    shard_name,
)
from ..common.features import (
    TORCH_DTYPES,
    digest_feature_chunk,
    read_chunk_header,
    read_manifest,
    write_feature_chunk,
)
from ..common.models import LoadedCoca, load_coca, parse_layers, resolve_device, vision_block_outputs
from ..common.progress import Progress
from .shards import DEFAULT_MAX_PIXELS, ShardError, decode_image, iter_samples

log = logging.getLogger(__name__)

CHUNK_PREFIX = "chunk-"
CPU_BATCH = 16
MAX_BATCH = 256


@dataclass
class ExtractSettings:
    model: str = "tiny-random"
    pretrained: str | None = None
    layers: str = "all"
    dtype: str = "float16"
    batch_size: str | int = "auto"
    device: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    writers: int = 2                 # chunks in flight to storage at once
    decoders: int = 0                # image decode threads (0: one per CPU core, at most 16)
    max_chunk_bytes: int = 1 << 30   # host memory bound per chunk (pinned buffer)


def parameters_fingerprint(model: str, pretrained: str, layers: list[int], dtype: str) -> dict:
    """What makes two extractions of a shard the same: compared on re-runs, stored in every chunk."""
    return {"model": model, "pretrained": pretrained, "layers": layers, "dtype": dtype}


def _tokens_and_width(loaded: LoadedCoca) -> tuple[int, int]:
    visual = loaded.model.visual
    return visual.positional_embedding.shape[0], visual.transformer.width


def bounded_map(pool: ThreadPoolExecutor, fn, items, window: int):
    """``pool.map`` in order, but at most ``window`` items in flight: ``Executor.map`` would
    read and decode the whole shard ahead, and host memory would grow with the shard."""
    from collections import deque

    futures = deque()
    for item in items:
        futures.append(pool.submit(fn, item))
        if len(futures) >= window:
            yield futures.popleft().result()
    while futures:
        yield futures.popleft().result()


def decode_threads(settings: ExtractSettings) -> int:
    """JPEG decoding and resizing release the GIL: a thread per core keeps a GPU fed."""
    return settings.decoders or max(1, min(16, os.cpu_count() or 1))


def _as_pair(size) -> tuple[int, int]:
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


def auto_batch_size(device: str, per_image_bytes: int, max_chunk_bytes: int, width: int, tokens: int) -> int:
    """Largest batch that fits half the free GPU memory and the host chunk bound."""
    host_bound = max(1, max_chunk_bytes // max(per_image_bytes, 1))
    if not device.startswith("cuda"):
        return min(CPU_BATCH, host_bound)
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    # Activations of one block (attention + 4x MLP) in half precision, plus the kept outputs.
    act = tokens * width * 2 * 12
    gpu_bound = int(free * 0.5 // (act + per_image_bytes))
    return max(1, min(MAX_BATCH, gpu_bound, host_bound))


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
            self.free.put({l: torch.empty(s, dtype=dtype, pin_memory=pin) for l, s in shape_by_layer.items()})

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


def _existing_chunks(shard_dir: str, shard_uri: str, fingerprint: dict) -> list[tuple[ChunkInfo, list[str]]]:
    """Chunks a crashed run left: (info, image keys). Refuses chunks of other parameters or
    another shard; removes the temporary files of writes that never completed."""
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
            raise ValueError(f"{uri} holds images of {header.metadata['shard']}, not {shard_uri}: two shards share "
                             "a name; rename one or use another --out")
        made = json.loads(header.metadata.get("parameters", "{}"))
        if made != fingerprint:
            raise ValueError(
                f"{shard_dir} holds chunks made with {made}, not {fingerprint}; "
                "use another --out for different parameters, or delete the folder"
            )
        nbytes, digests = digest_feature_chunk(uri)  # what is really there: the manifest must not vouch for a guess
        out.append((ChunkInfo(key=name, images=len(header.image_keys), bytes=nbytes, sha256=digests), header.image_keys))
    return out


def extract_shard(shard_uri: str, out_uri: str, loaded: LoadedCoca, settings: ExtractSettings, device: str) -> FeatureManifest:
    """Extract one shard into ``out_uri/<shard name>/``; returns its manifest."""
    name = shard_name(shard_uri)
    shard_dir = storage.join(out_uri, name)
    layers = parse_layers(settings.layers, loaded.n_layers)
    if settings.dtype not in TORCH_DTYPES:
        raise ValueError(f"--dtype {settings.dtype!r}: use one of {', '.join(TORCH_DTYPES)}")
    fingerprint = parameters_fingerprint(loaded.name, loaded.pretrained, layers, settings.dtype)

    done = read_manifest(shard_dir)
    if done is not None and done.shard != shard_uri:
        raise ValueError(f"{shard_dir} holds the features of {done.shard}, not {shard_uri}: two shards share the name "
                         f"{name!r}; rename one or use another --out")
    if done is not None:
        existing = parameters_fingerprint(done.model, done.pretrained, done.layers, done.dtype)
        if existing == fingerprint:
            log.info("%s: already extracted (%d images), skipping", name, done.image_count)
            return done
        raise ValueError(
            f"{shard_dir} already holds features made with {existing}, not {fingerprint}; "
            "use another --out for different parameters"
        )

    previous = _existing_chunks(shard_dir, shard_uri, fingerprint)
    chunks: list[ChunkInfo] = [info for info, _ in previous]
    done_keys = {k for _, keys in previous for k in keys}
    if previous:
        log.info("%s: resuming, %d chunks (%d images) already written", name, len(previous), len(done_keys))

    tokens, width = _tokens_and_width(loaded)
    image_size = max(_as_pair(loaded.model.visual.image_size))
    out_dtype = TORCH_DTYPES[settings.dtype]
    per_image = len(layers) * tokens * width * out_dtype.itemsize
    if settings.batch_size == "auto":
        batch = auto_batch_size(device, per_image, settings.max_chunk_bytes, width, tokens)
    else:
        batch = int(settings.batch_size)
        if batch < 1:
            raise ValueError("--batch-size must be >= 1 or 'auto'")
        host_bound = max(1, settings.max_chunk_bytes // per_image)
        if batch > host_bound:  # (writers + 1) pinned buffers of this size are held
            log.warning("%s: --batch-size %d would pin %.1f GB per buffer; using %d", name, batch,
                        batch * per_image / 1e9, host_bound)
            batch = host_bound
    log.info("%s: layers %s, batch %d, %.1f MB of features per image", name, layers, batch, per_image / 1e6)

    use_cuda = device.startswith("cuda")
    # Half-precision compute on the GPU in the stored dtype; fp32 on the CPU (and for fp32 features).
    autocast_dtype = out_dtype if use_cuda and out_dtype != torch.float32 else None
    writers = ChunkWriters(max(1, settings.writers))
    writers.buffers({l: (batch, tokens, width) for l in layers}, out_dtype, pin=use_cuda)
    skipped: list[SkippedSample] = []
    base_meta = {
        "model": loaded.name, "pretrained": loaded.pretrained, "layers": json.dumps(layers),
        "dtype": settings.dtype, "parameters": json.dumps(fingerprint), "shard": shard_uri,
    }
    # After the highest surviving chunk: writers finish out of order, so a killed run can
    # leave chunk 3 without chunk 2; reusing a number would overwrite finished images.
    next_index = max((int(c.key[len(CHUNK_PREFIX):].split(".")[0]) for c in chunks), default=-1) + 1
    progress = Progress(f"extract {name}", "img")

    def prepare(sample):
        try:
            img = decode_image(sample.image_bytes()[1], target_size=image_size, max_pixels=settings.max_pixels)
            return sample.key, loaded.preprocess(img), None
        except ValueError as e:
            return sample.key, None, str(e)

    def write_chunk(index: int, keys: list[str], host: dict[int, torch.Tensor], n: int, event):
        if event is not None:
            event.synchronize()
        key = f"{CHUNK_PREFIX}{index:05d}.safetensors"
        meta = dict(base_meta, image_keys=json.dumps(keys))
        nbytes, sha = write_feature_chunk(storage.join(shard_dir, key), {l: host[l][:n] for l in layers}, meta)
        progress.update(0, nbytes)
        return ChunkInfo(key=key, images=n, bytes=nbytes, sha256=sha)

    def run_batch(keys: list[str], pixels: list[torch.Tensor]):
        nonlocal next_index, batch
        start = 0
        while start < len(keys):
            n = min(batch, len(keys) - start)
            try:
                images = torch.stack(pixels[start:start + n]).to(device, non_blocking=True)
                with torch.autocast(device_type="cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    outs = vision_block_outputs(loaded.model.visual, images, layers)
            except torch.OutOfMemoryError:
                if n == 1:
                    raise
                batch = max(1, n // 2)
                log.warning("%s: out of GPU memory at batch %d, halving to %d", name, n, batch)
                torch.cuda.empty_cache()
                continue
            host = writers.take()
            for l, o in zip(layers, outs):
                host[l][:n].copy_(o.to(out_dtype), non_blocking=use_cuda)
            event = None
            if use_cuda:
                event = torch.cuda.Event()
                event.record()
            writers.submit(write_chunk, host, next_index, keys[start:start + n], host, n, event)
            next_index += 1
            progress.update(n)
            start += n

    try:
        threads = decode_threads(settings)
        with ThreadPoolExecutor(max_workers=threads) as decoders:
            pending_keys: list[str] = []
            pending_pixels: list[torch.Tensor] = []
            samples = (s for s in iter_samples(shard_uri, skipped) if s.key not in done_keys)
            for key, pixels, error in bounded_map(decoders, prepare, samples, window=max(batch, 4 * threads)):
                if error is not None:
                    skipped.append(SkippedSample(key, error))
                    continue
                pending_keys.append(key)
                pending_pixels.append(pixels)
                if len(pending_keys) >= batch:
                    run_batch(pending_keys, pending_pixels)
                    pending_keys, pending_pixels = [], []
            if pending_keys:
                run_batch(pending_keys, pending_pixels)
        chunks.extend(writers.drain())
    finally:
        writers.close()
        progress.close()

    chunks.sort(key=lambda c: c.key)
    manifest = FeatureManifest(
        shard=shard_uri, model=loaded.name, pretrained=loaded.pretrained, layers=layers,
        dtype=settings.dtype, tokens=tokens, width=width,
        image_count=sum(c.images for c in chunks), objects=chunks, skipped=skipped,
        made_by=provenance(**fingerprint, batch_size=batch, device=device),
    )
    storage.write_json(storage.join(shard_dir, MANIFEST_NAME), manifest.to_json())
    log.info("%s: %d images, %d chunks, %d skipped", name, manifest.image_count, len(chunks), len(skipped))
    return manifest


@dataclass
class ExtractResult:
    manifests: dict[str, FeatureManifest]   # shard uri -> manifest
    failed: dict[str, str]                  # shard uri -> error message


def run_extract(shard_uris: list[str], out_uri: str, settings: ExtractSettings) -> ExtractResult:
    """Extract every shard; a bad shard fails alone and is reported, the others go on."""
    if not shard_uris:
        raise ValueError("no shards given")
    check_unique_shard_names(shard_uris)
    device = resolve_device(settings.device)
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))  # events and streams of the copies live on this GPU
    loaded = load_coca(settings.model, settings.pretrained, device=device)
    parse_layers(settings.layers, loaded.n_layers)  # fail early on bad layers
    result = ExtractResult({}, {})
    for uri in shard_uris:
        try:
            result.manifests[uri] = extract_shard(uri, out_uri, loaded, settings, device)
        except (ShardError, storage.StorageError) as e:
            log.error("shard failed: %s", e)
            result.failed[uri] = str(e)
    return result
