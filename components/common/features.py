"""Feature chunks: standard safetensors files, streamed out and read back layer by layer.

A chunk holds one image batch of one shard: a tensor ``layer_{i}`` of shape
``[n, tokens, width]`` per selected layer, and in the header's ``__metadata__`` the
image keys (JSON list), model, pretrained tag, layer indices and dtype.

Written as a stream (header, then each tensor's bytes straight from host memory, no
serialised copy of the whole chunk), so a chunk of any size costs no extra memory.
Read back with two small ranged GETs for the header and one per wanted layer, so a
reader that wants 3 of 24 layers fetches 1/8 of the bytes. Any safetensors reader
(``safetensors.torch.load``) reads the same files.
"""

from __future__ import annotations

import hashlib
import json
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import torch

from . import storage
from .contracts import MANIFEST_NAME, ChunkInfo, FeatureManifest

TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
SAFETENSORS_DTYPES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}
_FROM_SAFETENSORS = {v: k for k, v in SAFETENSORS_DTYPES.items()}


def tensor_name(layer: int) -> str:
    return f"layer_{layer}"


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a CPU tensor, without a copy."""
    t = t.contiguous()
    return memoryview(t.view(torch.uint8).numpy()).cast("B")


def write_feature_chunk(uri: str, tensors: dict[int, torch.Tensor], metadata: dict[str, str]) -> tuple[int, str]:
    """Stream one chunk to ``uri``; returns (bytes written, sha256 hex)."""
    header: dict = {"__metadata__": metadata}
    offset = 0
    for layer, t in tensors.items():
        dtype = next(k for k, v in TORCH_DTYPES.items() if v == t.dtype)
        n = t.numel() * t.element_size()
        header[tensor_name(layer)] = {
            "dtype": SAFETENSORS_DTYPES[dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors aligns the data start to 8 bytes
    digest = hashlib.sha256()
    total = 0
    with storage.open_write(uri) as f:
        for piece in (struct.pack("<Q", len(raw)), raw):
            f.write(piece)
            digest.update(piece)
            total += len(piece)
        for t in tensors.values():
            mv = _tensor_bytes(t)
            f.write(mv)
            digest.update(mv)
            total += len(mv)
    return total, digest.hexdigest()


@dataclass
class ChunkHeader:
    uri: str
    data_start: int
    entries: dict  # tensor name -> {"dtype", "shape", "data_offsets"}
    metadata: dict

    @property
    def image_keys(self) -> list[str]:
        return json.loads(self.metadata["image_keys"])

    @property
    def layers(self) -> list[int]:
        return [int(n.split("_", 1)[1]) for n in self.entries]


def read_chunk_header(uri: str) -> ChunkHeader:
    (n,) = struct.unpack("<Q", storage.read_range(uri, 0, 8))
    if n > 100 * 1024 * 1024:
        raise ValueError(f"{uri}: not a safetensors feature chunk (header length {n})")
    header = json.loads(storage.read_range(uri, 8, n))
    metadata = header.pop("__metadata__", {})
    return ChunkHeader(uri=uri, data_start=8 + n, entries=header, metadata=metadata)


def read_chunk_layer(header: ChunkHeader, layer: int) -> torch.Tensor:
    """One layer's tensor of a chunk, fetched with a single ranged read."""
    name = tensor_name(layer)
    if name not in header.entries:
        raise KeyError(f"{header.uri} has no layer {layer} (it holds {header.layers}); re-run extract with it selected")
    entry = header.entries[name]
    begin, end = entry["data_offsets"]
    buf = bytearray(storage.read_range(header.uri, header.data_start + begin, end - begin))
    dtype = TORCH_DTYPES[_FROM_SAFETENSORS[entry["dtype"]]]
    return torch.frombuffer(buf, dtype=dtype).reshape(entry["shape"]) if buf else torch.empty(entry["shape"], dtype=dtype)


def read_manifest(shard_dir: str) -> FeatureManifest | None:
    """The shard's manifest, or None when the shard is not (completely) extracted."""
    uri = storage.join(shard_dir, MANIFEST_NAME)
    if not storage.exists(uri):
        return None
    return FeatureManifest.from_json(storage.read_json(uri))


@dataclass
class FeatureChunk:
    image_keys: list[str]
    layers: dict[int, torch.Tensor]  # layer -> [n, tokens, width]


def iter_feature_chunks(shard_dir: str, layers: list[int] | None = None, prefetch: int = 2) -> Iterator[FeatureChunk]:
    """Stream a finished shard's chunks, reading only the wanted layers.

    Reads run ``prefetch`` chunks ahead in background threads, so the consumer's compute
    overlaps the transfer.
    """
    manifest = read_manifest(shard_dir)
    if manifest is None:
        raise FileNotFoundError(f"{shard_dir} has no {MANIFEST_NAME}: its extract did not finish; run extract first")
    wanted = manifest.layers if layers is None else list(layers)
    missing = sorted(set(wanted) - set(manifest.layers))
    if missing:
        raise ValueError(f"{shard_dir} holds layers {manifest.layers}; layers {missing} were not extracted")

    def load(info: ChunkInfo) -> FeatureChunk:
        header = read_chunk_header(storage.join(shard_dir, info.key))
        with ThreadPoolExecutor(max_workers=4) as pool:
            tensors = dict(zip(wanted, pool.map(lambda l: read_chunk_layer(header, l), wanted)))
        return FeatureChunk(image_keys=header.image_keys, layers=tensors)

    with ThreadPoolExecutor(max_workers=max(1, prefetch)) as pool:
        futures = [pool.submit(load, info) for info in manifest.objects[:prefetch]]
        for i in range(len(manifest.objects)):
            chunk = futures[i].result()
            nxt = i + prefetch
            if nxt < len(manifest.objects):
                futures.append(pool.submit(load, manifest.objects[nxt]))
            yield chunk
