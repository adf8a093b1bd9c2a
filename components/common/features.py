"""Feature chunks: standard safetensors files, streamed out and read back layer by layer.

A chunk holds one image batch of one shard: a tensor ``layer_{i}`` of shape
``[n, tokens, width]`` per selected layer, and in the header's ``__metadata__`` the
image keys (JSON list), model, pretrained tag, layer indices and dtype.

Written as a stream (header, then each tensor's bytes straight from host memory, no
serialised copy of the whole chunk), so a chunk of any size costs no extra memory.
Read back with two small ranged GETs for the header and one per wanted layer, so a
reader that wants 3 of 24 layers fetches 1/8 of the bytes. Any safetensors reader
(``safetensors.torch.load``) reads the same files.

Integrity: the writer hashes each part as it streams it (the header, then each layer's
tensor: one pass, every byte once), the manifest records those digests, and every read
checks the part it fetched before handing it on. A chunk changed or cut after extract
fails with ``CorruptChunkError`` naming the object and the manifest.
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
from .precision import torch_dtype

SAFETENSORS_DTYPES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}  # the names of common.precision
_FROM_SAFETENSORS = {v: k for k, v in SAFETENSORS_DTYPES.items()}


def tensor_name(layer: int) -> str:
    return f"layer_{layer}"


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a CPU tensor, without a copy."""
    t = t.contiguous()
    return memoryview(t.view(torch.uint8).numpy()).cast("B")


HEADER_PART = "header"


class CorruptChunkError(ValueError):
    """A feature chunk's bytes differ from what its manifest recorded."""


def _check_part(uri: str, part: str, data: bytes | bytearray, expected: dict[str, str] | None) -> None:
    if expected is None:
        return
    want = expected.get(part)
    if want is None:
        raise CorruptChunkError(f"{uri}: its manifest records no digest of part {part!r}; re-run extract for this shard")
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        shard_dir = uri.rsplit("/", 1)[0]
        raise CorruptChunkError(
            f"{uri}: part {part!r} has sha256 {got[:16]}..., but {storage.join(shard_dir, MANIFEST_NAME)} records "
            f"{want[:16]}...: the chunk was changed or damaged after extract. Delete the shard's feature folder "
            f"({shard_dir}) and re-run extract for it")


def write_feature_chunk(uri: str, tensors: dict[int, torch.Tensor], metadata: dict[str, str]) -> tuple[int, dict[str, str]]:
    """Stream one chunk to ``uri``; returns (bytes written, sha256 hex per part: ``header``, ``layer_<i>``)."""
    header: dict = {"__metadata__": metadata}
    offset = 0
    for layer, t in tensors.items():
        dtype = str(t.dtype).removeprefix("torch.")
        n = t.numel() * t.element_size()
        header[tensor_name(layer)] = {
            "dtype": SAFETENSORS_DTYPES[dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors aligns the data start to 8 bytes
    head = struct.pack("<Q", len(raw)) + raw
    digests = {HEADER_PART: hashlib.sha256(head).hexdigest()}
    total = len(head)
    with storage.open_write(uri) as f:
        f.write(head)
        for layer, t in tensors.items():
            mv = _tensor_bytes(t)
            f.write(mv)
            digests[tensor_name(layer)] = hashlib.sha256(mv).hexdigest()
            total += len(mv)
    return total, digests


def digest_feature_chunk(uri: str) -> tuple[int, dict[str, str]]:
    """(size, per-part sha256) of a chunk already written, as ``write_feature_chunk`` returns them.

    For a resumed extract: the manifest must vouch for what is really there, not for a guess.
    """
    header = read_chunk_header(uri)
    digests = {HEADER_PART: hashlib.sha256(storage.read_range(uri, 0, header.data_start)).hexdigest()}
    for name, entry in header.entries.items():
        begin, end = entry["data_offsets"]
        digests[name] = hashlib.sha256(storage.read_range(uri, header.data_start + begin, end - begin)).hexdigest()
    return storage.size(uri), digests


@dataclass
class ChunkHeader:
    uri: str
    data_start: int
    entries: dict  # tensor name -> {"dtype", "shape", "data_offsets"}
    metadata: dict
    sha256: dict[str, str] | None = None  # the manifest's digests, checked by read_chunk_layer

    @property
    def image_keys(self) -> list[str]:
        return json.loads(self.metadata["image_keys"])

    @property
    def layers(self) -> list[int]:
        return [int(n.split("_", 1)[1]) for n in self.entries]


def read_chunk_header(uri: str, sha256: dict[str, str] | None = None) -> ChunkHeader:
    """A chunk's header; with ``sha256`` (the manifest's digests) the header and every layer read through it are checked."""
    prefix = storage.read_range(uri, 0, 8)
    (n,) = struct.unpack("<Q", prefix) if len(prefix) == 8 else (-1,)
    if not 0 < n <= 100 * 1024 * 1024:
        _check_part(uri, HEADER_PART, prefix, sha256)
        raise CorruptChunkError(f"{uri}: not a safetensors feature chunk (header length {n}); re-run extract for this shard")
    raw = storage.read_range(uri, 8, n)
    _check_part(uri, HEADER_PART, prefix + raw, sha256)
    header = json.loads(raw)
    metadata = header.pop("__metadata__", {})
    return ChunkHeader(uri=uri, data_start=8 + n, entries=header, metadata=metadata, sha256=sha256)


def read_chunk_layer(header: ChunkHeader, layer: int) -> torch.Tensor:
    """One layer's tensor of a chunk, fetched with a single ranged read."""
    name = tensor_name(layer)
    if name not in header.entries:
        raise KeyError(f"{header.uri} has no layer {layer} (it holds {header.layers}); re-run extract with it selected")
    entry = header.entries[name]
    begin, end = entry["data_offsets"]
    buf = bytearray(storage.read_range(header.uri, header.data_start + begin, end - begin))
    if len(buf) != end - begin:
        raise CorruptChunkError(f"{header.uri}: layer {layer} is cut short ({len(buf)} of {end - begin} bytes); "
                                "re-run extract for this shard")
    _check_part(header.uri, name, buf, header.sha256)
    dtype = torch_dtype(_FROM_SAFETENSORS[entry["dtype"]])
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
        header = read_chunk_header(storage.join(shard_dir, info.key), sha256=info.sha256)
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
