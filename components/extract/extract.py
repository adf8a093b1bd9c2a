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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from ..common import storage
from ..common.contracts import (
    MANIFEST_NAME,
    ChunkInfo,
    FeatureManifest,
    SkippedSample,
    check_unique_shard_names,
    shard_name,
)
from ..common.devices import resolve_device
from ..common.features import (
    CorruptChunkError,
    write_feature_chunk,
)
from ..common.memory_budget import rows_in_free_memory
from ..common.model_families import STUDY_MODEL, VISION, VisionLanguageModel, load_model
from ..common.model_families.layer_selection import parse_layers
from ..common.oom import OutOfMemoryBackoff, backoff_batches
from ..common.precision import exact_float32_math, parse_dtype, torch_dtype
from ..common.progress import Progress
from ..common.shard_failures import OutputRefusedError
from ..common.storage.write_lease import WriteLease
from ..common.tables import provenance
from ..common.tar_samples import DEFAULT_MAX_MEMBER_BYTES, ShardError, iter_samples
from .chunks import (
    CHUNK_PREFIX,
    ChunkWriters,
    existing_chunks,
    finished_manifest,
    next_chunk_index,
    parameters_fingerprint,
)
from .image_decoding import DEFAULT_MAX_ASPECT_RATIO, DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, decode_image

log = logging.getLogger(__name__)

CPU_BATCH = 16
MAX_BATCH = 256


@dataclass
class ExtractSettings:
    model: str = STUDY_MODEL
    pretrained: str | None = None
    layers: str = "all"
    dtype: str = "float16"           # stored feature dtype: float16, bfloat16 or float32 (common.precision)
    batch_size: str | int = "auto"
    device: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_side: int = DEFAULT_MAX_SIDE                        # pixels of an image's longer side
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO      # longer side / shorter side
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES        # one file of a sample, read whole
    writers: int = 2                 # chunks in flight to storage at once
    decoders: int = 0                # image decode threads (0: one per CPU core, at most 16)
    max_chunk_bytes: int = 1 << 30   # host memory bound per chunk (pinned buffer)
    run_id: str = ""                 # named in the shard folder's write lease (pipeline run id; empty: a CLI run)


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


def auto_batch_size(device: str, per_image_bytes: int, max_chunk_bytes: int, width: int, tokens: int) -> int:
    """Largest batch that fits the free GPU memory's share (``common.memory_budget``) and the host chunk bound."""
    host_bound = max(1, max_chunk_bytes // max(per_image_bytes, 1))
    # Activations of one block (attention + 4x MLP) in half precision, plus the kept outputs.
    act = tokens * width * 2 * 12
    return min(rows_in_free_memory(device, act + per_image_bytes, MAX_BATCH, CPU_BATCH), host_bound)


def choose_batch_size(settings: ExtractSettings, device: str, per_image_bytes: int, tokens: int, width: int,
                      name: str) -> int:
    """``--batch-size`` (bounded by the host memory of one pinned buffer) or, for ``auto``, from free GPU memory."""
    if settings.batch_size == "auto":
        return auto_batch_size(device, per_image_bytes, settings.max_chunk_bytes, width, tokens)
    batch = int(settings.batch_size)
    if batch < 1:
        raise ValueError("--batch-size must be >= 1 or 'auto'")
    host_bound = max(1, settings.max_chunk_bytes // per_image_bytes)
    if batch > host_bound:  # (writers + 1) pinned buffers of this size are held
        log.warning("%s: --batch-size %d would pin %.1f GB per buffer; using %d", name, batch,
                    batch * per_image_bytes / 1e9, host_bound)
        batch = host_bound
    return batch


class ShardExtractor:
    """One shard's extraction: images decoded in threads, the vision tower's forward in
    batches (halved on out-of-memory), each selected block's output cast on the device and
    copied asynchronously into a pinned host buffer, and the chunk written in the background
    once a CUDA event says the copy is complete."""

    def __init__(self, shard_uri: str, shard_dir: str, loaded: VisionLanguageModel, layers: list[int], dtype: str,
                 settings: ExtractSettings, device: str, batch_size: int, fingerprint: dict, first_index: int,
                 lease: WriteLease | None = None):
        self.shard_uri, self.shard_dir, self.loaded, self.layers = shard_uri, shard_dir, loaded, layers
        self.lease = lease
        self.settings, self.device, self.next_index = settings, device, first_index
        self.name = storage.basename(shard_dir)
        self.out_dtype = torch_dtype(dtype)
        self.use_cuda = device.startswith("cuda")
        # Half-precision compute on the GPU in the stored dtype; fp32 on the CPU (and for fp32 features).
        self.autocast_dtype = self.out_dtype if self.use_cuda and self.out_dtype != torch.float32 else None
        self.image_size = loaded.image_size
        tokens, width = loaded.feature_shape()
        self.backoff = OutOfMemoryBackoff(batch_size, f"extract {self.name}", advice="set a smaller --batch-size "
                                          "or use a GPU with more free memory")
        self.writers = ChunkWriters(max(1, settings.writers))
        self.writers.buffers({layer: (batch_size, tokens, width) for layer in layers}, self.out_dtype, pin=self.use_cuda)
        self.chunk_metadata = {
            "model": loaded.name, "pretrained": loaded.pretrained, "model_family": loaded.family,
            "layers": json.dumps(layers),
            "dtype": dtype, "parameters": json.dumps(fingerprint), "shard": shard_uri,
        }
        self.progress = Progress(f"extract {self.name}", "img")

    def decode(self, sample) -> tuple[str, torch.Tensor | None, str | None]:
        """(key, pixels, None) or (key, None, why the image was skipped).

        Whatever one image's decode or transform raises is that image's problem, recorded as its
        skip: a MemoryError too (one absurd image asked for it; the next image starts afresh)."""
        settings = self.settings
        try:
            image = decode_image(sample.image_bytes()[1], target_size=self.image_size, max_pixels=settings.max_pixels,
                                 max_side=settings.max_side, max_aspect_ratio=settings.max_aspect_ratio)
        except ValueError as e:  # decode_image's own reasons
            return sample.key, None, str(e)
        except Exception as e:  # noqa: BLE001 -- PIL raises many types
            return sample.key, None, f"image could not be decoded ({type(e).__name__}: {e})"
        try:
            return sample.key, self.loaded.preprocess(image), None
        except Exception as e:  # noqa: BLE001 -- e.g. OverflowError, MemoryError of a resize
            return sample.key, None, (f"the model's transform failed on this {image.width}x{image.height} image "
                                      f"({type(e).__name__}: {e})")

    def forward(self, pixels: list[torch.Tensor]) -> list[torch.Tensor]:
        """The selected blocks' outputs of one batch, on the device (may run out of memory)."""
        images = torch.stack(pixels).to(self.device, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            return self.loaded.vision_block_outputs(images, self.layers)

    def write_chunk(self, index: int, keys: list[str], host: dict[int, torch.Tensor], n: int,
                    copied: torch.cuda.Event | None) -> ChunkInfo:
        """Runs on a writer thread: waits for the copy into ``host``, then writes the chunk."""
        if copied is not None:
            copied.synchronize()
        if self.lease is not None:
            self.lease.ensure_held()  # a writer that lost its folder to another must not overwrite that one's chunks
        key = f"{CHUNK_PREFIX}{index:05d}.safetensors"
        metadata = dict(self.chunk_metadata, image_keys=json.dumps(keys))
        nbytes, sha = write_feature_chunk(storage.join(self.shard_dir, key),
                                          {layer: host[layer][:n] for layer in self.layers}, metadata)
        self.progress.update(0, nbytes)
        return ChunkInfo(key=key, images=n, bytes=nbytes, sha256=sha)

    def copy_out(self, keys: list[str], outputs: list[torch.Tensor]) -> None:
        """Cast on the device, copy into a free pinned buffer without waiting, hand it to a writer."""
        host = self.writers.take()
        n = len(keys)
        for layer, output in zip(self.layers, outputs):
            host[layer][:n].copy_(output.to(self.out_dtype), non_blocking=self.use_cuda)
        copied = None
        if self.use_cuda:
            copied = torch.cuda.Event()
            copied.record()
        self.writers.submit(self.write_chunk, host, self.next_index, keys, host, n, copied)
        self.next_index += 1
        self.progress.update(n)

    def run_batch(self, keys: list[str], pixels: list[torch.Tensor]) -> None:
        def forward_part(start: int, n: int) -> list[torch.Tensor]:
            return self.forward(pixels[start:start + n])

        for start, n, outputs in backoff_batches(len(keys), self.backoff, forward_part):
            self.copy_out(keys[start:start + n], outputs)
            del outputs  # freed before the next forward: the copies already queued on the stream keep their order

    def run(self, samples, skipped: list[SkippedSample]) -> list[ChunkInfo]:
        """Extract ``samples`` (decoding failures go to ``skipped``); returns the chunks written."""
        threads = decode_threads(self.settings)
        window = max(self.backoff.batch_size, 4 * threads)
        with ThreadPoolExecutor(max_workers=threads) as decoders:
            pending_keys: list[str] = []
            pending_pixels: list[torch.Tensor] = []
            for key, pixels, error in bounded_map(decoders, self.decode, samples, window=window):
                if error is not None:
                    skipped.append(SkippedSample(key, error))
                    continue
                pending_keys.append(key)
                pending_pixels.append(pixels)
                if len(pending_keys) >= self.backoff.batch_size:
                    self.run_batch(pending_keys, pending_pixels)
                    pending_keys, pending_pixels = [], []
            if pending_keys:
                self.run_batch(pending_keys, pending_pixels)
        return self.writers.drain()

    def close(self) -> None:
        self.writers.close()
        self.progress.close()


def extract_shard(shard_uri: str, out_uri: str, loaded: VisionLanguageModel, settings: ExtractSettings, device: str) -> FeatureManifest:
    """Extract one shard into ``out_uri/<shard name>/``; returns its manifest."""
    name = shard_name(shard_uri)
    shard_dir = storage.join(out_uri, name)
    layers = parse_layers(settings.layers, loaded.n_layers)
    dtype = parse_dtype(settings.dtype)
    fingerprint = parameters_fingerprint(loaded.name, loaded.pretrained, layers, dtype)
    done = finished_manifest(shard_dir, shard_uri, fingerprint)
    if done is not None:
        log.info("%s: already extracted (%d images), skipping", name, done.image_count)
        return done
    with WriteLease(shard_dir, settings.run_id, what="one shard's features") as lease:
        done = finished_manifest(shard_dir, shard_uri, fingerprint)  # finished by another run since the check above
        if done is not None:
            log.info("%s: extracted by another run meanwhile (%d images), skipping", name, done.image_count)
            return done
        return _write_shard(shard_uri, shard_dir, loaded, settings, device, layers, dtype, fingerprint, lease)


def _write_shard(shard_uri: str, shard_dir: str, loaded: VisionLanguageModel, settings: ExtractSettings, device: str,
                 layers: list[int], dtype: str, fingerprint: dict, lease: WriteLease) -> FeatureManifest:
    """The writing half of ``extract_shard``, run with the shard folder's lease held."""
    name = storage.basename(shard_dir)
    previous = existing_chunks(shard_dir, shard_uri, fingerprint)
    chunks: list[ChunkInfo] = [info for info, _ in previous]
    done_keys = {key for _, keys in previous for key in keys}
    if previous:
        log.info("%s: resuming, %d chunks (%d images) already written", name, len(previous), len(done_keys))

    tokens, width = loaded.feature_shape()
    per_image = len(layers) * tokens * width * torch_dtype(dtype).itemsize
    batch = choose_batch_size(settings, device, per_image, tokens, width, name)
    log.info("%s: layers %s, batch %d, %.1f MB of features per image", name, layers, batch, per_image / 1e6)
    math = exact_float32_math() if dtype == "float32" else {}  # fp32 features: float32 computed as float32

    skipped: list[SkippedSample] = []
    extractor = ShardExtractor(shard_uri, shard_dir, loaded, layers, dtype, settings, device, batch, fingerprint,
                               first_index=next_chunk_index(chunks), lease=lease)
    try:
        samples = (s for s in iter_samples(shard_uri, skipped, settings.max_member_bytes) if s.key not in done_keys)
        chunks.extend(extractor.run(samples, skipped))
    finally:
        extractor.close()

    chunks.sort(key=lambda c: c.key)
    made_by = provenance(**fingerprint, model_family=loaded.family, batch_size=extractor.backoff.batch_size, device=device,
                         **({"tf32": math["tf32"]} if math else {}))
    manifest = FeatureManifest(
        shard=shard_uri, model=loaded.name, pretrained=loaded.pretrained, layers=layers,
        dtype=dtype, tokens=tokens, width=width,
        image_count=sum(c.images for c in chunks), objects=chunks, skipped=skipped, made_by=made_by,
        model_family=loaded.family, layer_numbering=loaded.layer_numbering().to_json(),
    )
    lease.ensure_held()
    storage.write_json(storage.join(shard_dir, MANIFEST_NAME), manifest.to_json())
    log.info("%s: %d images, %d chunks, %d skipped", name, manifest.image_count, len(chunks), len(skipped))
    return manifest


@dataclass
class ExtractResult:
    manifests: dict[str, FeatureManifest]   # shard uri -> manifest
    failed: dict[str, str]                  # shard uri -> error message
    errors: dict[str, Exception] = field(default_factory=dict)  # shard uri -> the error (common.shard_failures)


def check_has_images(shard_uri: str, manifest: FeatureManifest) -> None:
    """A shard none of whose samples gave an image is bad: nothing of it can be captioned."""
    if manifest.image_count:
        return
    if not manifest.skipped:
        raise ShardError(f"{shard_uri} holds no samples (an empty tar); webdataset shards hold KEY.jpg/png/webp files")
    first = manifest.skipped[0]
    raise ShardError(f"{shard_uri} holds no usable image: all {len(manifest.skipped)} samples were skipped "
                     f"(first: {first.key}: {first.reason}); see the skipped list in its manifest")


def run_extract(shard_uris: list[str], out_uri: str, settings: ExtractSettings) -> ExtractResult:
    """Extract every shard; a bad shard fails alone and is reported, the others go on.

    A shard fails when it cannot be read (not a tar, truncated, gone), when it holds no usable
    image, or when its output folder refuses it (features of other parameters or another shard).
    Out of memory and errors of the code stop the run.
    """
    if not shard_uris:
        raise ValueError("no shards given")
    check_unique_shard_names(shard_uris)
    parse_dtype(settings.dtype)  # fail before loading the model
    device = resolve_device(settings.device)
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))  # events and streams of the copies live on this GPU
    loaded = load_model(settings.model, settings.pretrained, device=device, part=VISION)  # the vision tower alone
    parse_layers(settings.layers, loaded.n_layers)  # fail early on bad layers
    result = ExtractResult({}, {})
    for uri in shard_uris:
        try:
            manifest = extract_shard(uri, out_uri, loaded, settings, device)
            check_has_images(uri, manifest)
            result.manifests[uri] = manifest
        except (ShardError, CorruptChunkError, OutputRefusedError, storage.StorageError) as e:
            log.error("shard failed: %s", e)
            result.failed[uri] = str(e)
            result.errors[uri] = e
    return result
