"""Caption: a caption for every (image, layer) of every extracted shard.

Features stream in chunk by chunk (only the layers asked for, read ahead in the
background), each layer's tokens become the decoder's image embeddings, and (image,
layer) pairs of many images and all layers are decoded together in large batches by
the cached decoder. Per shard: ``<out>/<shard>/captions.parquet`` (the captions
contract) and ``<out>/<shard>/manifest.json``, written last; a shard whose manifest
exists with the same parameters is skipped on a re-run.

With ``grounding`` (opt-in), each caption's grounding map (``grounding.py``) is computed in the
same pass, batch by batch right after the batch is decoded, and the table gets the
``grounding`` column (``CAPTIONS_GROUNDED_SCHEMA``) and the patch grid in its metadata.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import torch

from ..common import storage
from ..common.contracts import (
    CAPTIONS_FORMAT,
    CAPTIONS_GROUNDED_SCHEMA,
    CAPTIONS_META_GROUNDING_GRID,
    CAPTIONS_SCHEMA,
    CAPTIONS_VERSION,
    GROUNDING_FIELD,
    MANIFEST_NAME,
)
from ..common.devices import resolve_device
from ..common.features import iter_feature_chunks, read_manifest
from ..common.memory_budget import rows_in_free_memory
from ..common.model_families import VisionLanguageModel, load_model
from ..common.model_families.hub_revision import same_hub_model
from ..common.model_families.layer_selection import parse_layers
from ..common.oom import OutOfMemoryBackoff, backoff_batches
from ..common.precision import exact_float32_math, parse_dtype
from ..common.progress import Progress
from ..common.shard_failures import OutputRefusedError
from ..common.storage.write_lease import WriteLease
from ..common.tables import fingerprint, provenance, write_table
from .decoder_factory import make_decoder
from .greedy import DecodedCaptions, GreedySettings
from .grounding import Grounder, auto_grounding_batch

log = logging.getLogger(__name__)

CAPTIONS_NAME = "captions.parquet"
GROUNDING_COLUMN = GROUNDING_FIELD.name
CPU_BATCH = 64
MAX_BATCH = 4096
EMBED_WHOLE_CHUNK = 1 << 30      # the embedding pass starts with a chunk's images at once
PRECISIONS = ("float32", "bfloat16")


@dataclass
class CaptionSettings:
    layers: str = "all"
    precision: str = "float32"       # float32: the study's exact method; bfloat16: fast, opt-in
    batch_size: str | int = "auto"
    seq_len: int = 30
    min_seq_len: int = 5
    device: str = "auto"
    model: str | None = None          # default: the model that made the features
    pretrained: str | None = None
    run_id: str = ""                  # named in the shard folder's write lease (pipeline run id; empty: a CLI run)
    grounding: bool = False           # also each caption's grounding map (caption.grounding), a column of the table


def parse_precision(precision: str) -> str:
    """``float32`` (the study's exact method) or ``bfloat16`` (fast; opt-in), from the dtype vocabulary."""
    return parse_dtype(precision, PRECISIONS, what="--precision")


def chunk_embeddings(decoder, block_tokens: torch.Tensor, device: str, backoff: OutOfMemoryBackoff,
                     grounder: Grounder | None = None) -> torch.Tensor:
    """The decoder's image embeddings of one chunk's layer tokens ``[n, tokens, width]``, moved
    to ``device`` and embedded in batches that ``backoff`` halves on out-of-memory (the whole
    chunk at once while it fits). With a ``grounder``: the tokens after the first per-token
    normalisation (``X_k``), which it turns into the embeddings when the rows are decoded."""
    def embed(start: int, n: int) -> torch.Tensor:
        block = block_tokens[start:start + n].to(device)
        return grounder.normalised_tokens(block) if grounder is not None else decoder.image_embeddings(block)

    return torch.cat([embs for _, _, embs in backoff_batches(len(block_tokens), backoff, embed)])


def auto_decode_batch(decoder, n_image_tokens: int, device: str) -> int:
    """Rows per decode batch: what the caches of half the free GPU memory hold (``bytes_per_row``
    of the family's decoder: its KV cache, the image's keys/values and the logits)."""
    return rows_in_free_memory(device, decoder.bytes_per_row(n_image_tokens), MAX_BATCH, CPU_BATCH)


class CaptionBatcher:
    """Collects (image, layer) rows and decodes them in batches of ``batch_size``."""

    def __init__(self, decoder, loaded: VisionLanguageModel, batch_size: int, progress: Progress,
                 grounder: Grounder | None = None):
        self.decoder, self.loaded, self.progress, self.grounder = decoder, loaded, progress, grounder
        self.backoff = OutOfMemoryBackoff(batch_size, "caption", advice="decode on a GPU with more free memory")
        self.pending: list[tuple[list[str], int, torch.Tensor]] = []  # (image keys, layer, embeddings)
        self.n_pending = 0
        self.rows: list[dict] = []

    def add(self, keys: list[str], layer: int, embs: torch.Tensor, shard: str) -> None:
        self.shard = shard
        self.pending.append((keys, layer, embs))
        self.n_pending += len(keys)
        while self.n_pending >= self.backoff.batch_size:
            self._decode(self.backoff.batch_size)

    def flush(self) -> None:
        while self.n_pending:
            self._decode(min(self.n_pending, self.backoff.batch_size))

    def _take(self, n: int):
        keys, layers, parts = [], [], []
        while n:
            group_keys, layer, group_embs = self.pending[0]
            taken = min(n, len(group_keys))
            keys += group_keys[:taken]
            layers += [layer] * taken
            parts.append(group_embs[:taken])
            if taken == len(group_keys):
                self.pending.pop(0)
            else:
                self.pending[0] = (group_keys[taken:], layer, group_embs[taken:])
            n -= taken
            self.n_pending -= taken
        return keys, layers, torch.cat(parts)

    def _generate(self, embs: torch.Tensor) -> list[DecodedCaptions]:
        """Decode; on out-of-memory halve the batch (for the rest of the shard too) and go on."""
        def decode(start: int, n: int) -> DecodedCaptions:
            rows = embs[start:start + n]
            return self.decoder.generate(self.grounder.decoder_inputs(rows) if self.grounder is not None else rows)

        return [decoded for _, _, decoded in backoff_batches(len(embs), self.backoff, decode)]

    def _decode(self, n: int) -> None:
        keys, layers, embs = self._take(n)
        parts = self._generate(embs)
        out = DecodedCaptions(*(sum((getattr(p, f) for p in parts), []) for f in
                                ("token_ids", "stop", "entropy_bits", "mean_logprob")))
        maps = self.grounder.maps(embs, out.token_ids).to(torch.float16).numpy() if self.grounder is not None else None
        for i, key in enumerate(keys):
            ids = out.token_ids[i]
            self.rows.append({
                "image_key": key, "shard": self.shard, "layer": layers[i],
                "caption": self.loaded.caption_text(ids), "token_ids": ids, "n_tokens": len(ids),
                "stop": out.stop[i], "entropy_bits": out.entropy_bits[i], "mean_logprob": out.mean_logprob[i],
                **({"grounding": maps[i]} if maps is not None else {}),
            })
        self.progress.update(len(keys))


def caption_shard(features_dir: str, out_uri: str, decoder, loaded: VisionLanguageModel, settings: CaptionSettings,
                  device: str, made_by: dict) -> dict:
    """Caption one extracted shard; returns its captions manifest."""
    features = read_manifest(features_dir)
    if features is None:
        raise FileNotFoundError(f"{features_dir} has no {MANIFEST_NAME}: its extract has not finished; run extract first")
    name = storage.basename(features_dir)
    shard_out = storage.join(out_uri, name)
    layers = parse_layers(settings.layers, max(features.layers) + 1) if settings.layers != "all" else features.layers
    missing = sorted(set(layers) - set(features.layers))
    if missing:
        raise ValueError(f"{features_dir} has features of layers {features.layers}, not {missing}; re-run extract with them")
    # The features' identity: their manifest lists every chunk with its per-part sha256, so features
    # re-extracted with another dtype or other weights give another fingerprint, and old captions
    # of them are not taken as done.
    params = dict(made_by, layers=layers, features_fingerprint=fingerprint(features.to_json()))

    manifest_uri = storage.join(shard_out, MANIFEST_NAME)
    done = finished_captions(manifest_uri, shard_out, params)
    if done is not None:
        log.info("%s: already captioned (%d rows), skipping", name, done["rows"])
        return done
    # Two runs on one storage prefix: one writes this shard's captions, the other is refused (its
    # table and manifest could otherwise pair with the first run's, made with other parameters).
    with WriteLease(shard_out, settings.run_id, what="one shard's captions") as lease:
        done = finished_captions(manifest_uri, shard_out, params)
        if done is not None:
            log.info("%s: captioned by another run meanwhile (%d rows), skipping", name, done["rows"])
            return done
        return _write_captions(features_dir, features, shard_out, manifest_uri, decoder, loaded, settings, device,
                               made_by, layers, params, lease)


def finished_captions(manifest_uri: str, shard_out: str, params: dict) -> dict | None:
    """The manifest of captions already made with ``params``, None when there are none; an error
    when the folder holds captions made otherwise."""
    if not storage.exists(manifest_uri):
        return None
    done = storage.read_json(manifest_uri)
    if done.get("parameters") == params:
        return done
    raise OutputRefusedError(f"{shard_out} holds captions made with {done.get('parameters')}, not {params}; "
                             "use another --out")


def _write_captions(features_dir: str, features, shard_out: str, manifest_uri: str, decoder, loaded: VisionLanguageModel,
                    settings: CaptionSettings, device: str, made_by: dict, layers: list[int], params: dict,
                    lease: WriteLease) -> dict:
    """The writing half of ``caption_shard``, run with the shard folder's lease held."""
    name = storage.basename(features_dir)
    batch = settings.batch_size
    progress = Progress(f"caption {name}", "captions", total=features.image_count * len(layers))
    batcher = None
    grounder = Grounder(decoder) if settings.grounding else None
    # the embedding pass (attentional pooler or projector) over a chunk: as many images as fit
    embedding_backoff = OutOfMemoryBackoff(EMBED_WHOLE_CHUNK, "caption (image embeddings)",
                                           advice="decode on a GPU with more free memory")
    with progress:
        for chunk in iter_feature_chunks(features_dir, layers):
            for layer in layers:
                embs = chunk_embeddings(decoder, chunk.layers[layer], device, embedding_backoff, grounder)
                if batcher is None:
                    size = auto_decode_batch(decoder, embs.shape[1], device) if batch == "auto" else int(batch)
                    log.info("%s: layers %s, decode batch %d, precision %s", name, layers, size, made_by["precision"])
                    if grounder is not None:  # a backward pass per decode batch where it fits
                        grounder.backoff.batch_size = auto_grounding_batch(decoder, embs.shape[1], device, size)
                    batcher = CaptionBatcher(decoder, loaded, size, progress, grounder)
                batcher.add(chunk.image_keys, layer, embs, name)
        if batcher is not None:
            batcher.flush()
    rows = batcher.rows if batcher else []
    order = {k: i for i, k in enumerate(dict.fromkeys(r["image_key"] for r in rows))}
    rows.sort(key=lambda r: (order[r["image_key"]], r["layer"]))
    schema, made = CAPTIONS_SCHEMA, provenance(**params)
    if grounder is not None:
        schema, made[CAPTIONS_META_GROUNDING_GRID] = CAPTIONS_GROUNDED_SCHEMA, list(grounder.grid)
    table = captions_table(rows, schema)
    lease.ensure_held()
    write_table(storage.join(shard_out, CAPTIONS_NAME), table, schema, CAPTIONS_FORMAT, CAPTIONS_VERSION, made)
    manifest = {
        "format": CAPTIONS_FORMAT, "version": CAPTIONS_VERSION, "shard": features.shard,
        "features": features_dir, "captions": CAPTIONS_NAME, "rows": len(rows),
        "images": len(order), "layers": layers, "parameters": params,
        "skipped": [asdict(s) for s in features.skipped],
        "rate_captions_per_s": round(progress.rate, 2),
    }
    lease.ensure_held()
    storage.write_json(manifest_uri, manifest)
    return manifest


def captions_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """The rows as a table of ``schema``; grounding maps (float16 arrays) go in as one flat buffer."""
    if GROUNDING_COLUMN not in schema.names:
        return pa.Table.from_pylist(rows, schema=schema)
    maps = [r.pop(GROUNDING_COLUMN) for r in rows]
    table = pa.Table.from_pylist(rows, schema=CAPTIONS_SCHEMA)
    offsets = np.cumsum([0] + [len(m) for m in maps], dtype=np.int32)
    flat = np.concatenate(maps) if maps else np.zeros(0, dtype=np.float16)
    column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.float16()))
    return table.append_column(schema.field(GROUNDING_COLUMN), column)


def check_same_model(loaded: VisionLanguageModel, features, features_uri: str) -> None:
    """The model loaded must number its layers as the one that made the features did (same
    family, same depth): weights given elsewhere (``--pretrained``) may not be another model."""
    made = features.model_family
    if made and (made, features.n_layers) != (loaded.family, loaded.n_layers):
        raise ValueError(f"features under {features_uri} were made by a {made} model with {features.n_layers} layers; "
                         f"the weights given are a {loaded.family} model with {loaded.n_layers}: give the same model")


def decoder_start(decoder) -> dict:
    """What the captions started from, where it is not the family's fixed start token: LLaVA's prompt."""
    prompt_ids = getattr(decoder, "prompt_ids", None)
    if prompt_ids is None:
        return {}
    from ..common.model_families.llava import PROMPT

    return {"prompt": PROMPT, "prompt_token_ids": prompt_ids}


def decoder_end_and_rules(decoder) -> dict:
    """What else decides the captions, where a model has it: several end tokens (the first is forced at
    ``seq_len``), and the generation config's settings applied (``generation_settings``)."""
    made: dict[str, object] = {}
    end_ids = decoder.settings.end_token_ids
    if len(end_ids) > 1:
        made["end_token_ids"] = list(end_ids)
    applied = decoder.generation_settings() if hasattr(decoder, "generation_settings") else {}
    if applied:
        made["generation_settings"] = applied
    return made


def feature_shard_dirs(features_uri: str) -> list[str]:
    """Shard folders under a features prefix (those with a manifest), or the folder itself."""
    if storage.exists(storage.join(features_uri, MANIFEST_NAME)):
        return [features_uri]
    dirs = sorted({u.rsplit("/", 1)[0] for u in storage.list_uris(features_uri) if u.endswith("/" + MANIFEST_NAME)})
    if not dirs:
        raise FileNotFoundError(f"{features_uri} holds no finished feature shards (no {MANIFEST_NAME}); run extract first")
    return dirs


def run_caption(features_uri: str, out_uri: str, settings: CaptionSettings) -> list[dict]:
    """Caption every finished shard under ``features_uri``; returns the shards' manifests.

    The model is the one that made the features (from their manifest); ``settings.pretrained``
    may point at the same weights elsewhere (a local copy on an air-gapped cluster).
    """
    shard_dirs = feature_shard_dirs(features_uri)
    manifests = {d: read_manifest(d) for d in shard_dirs}
    first = manifests[shard_dirs[0]]
    for d, m in manifests.items():
        if (m.model, m.pretrained) != (first.model, first.pretrained):
            raise ValueError(f"{d} was extracted by {m.model}/{m.pretrained}, {shard_dirs[0]} by "
                             f"{first.model}/{first.pretrained}: caption one model's features per run (--features per model)")
    if settings.model and settings.model != first.model and not same_hub_model(settings.model, first.model):
        raise ValueError(f"features under {features_uri} were made by {first.model}, not {settings.model}; "
                         "captions must come from the model that made the features")
    # A hub model is loaded at the commit its features were made with (their model name is pinned,
    # hf:ORG/NAME@<sha>); the same hub name given again without a commit keeps that commit.
    pretrained = settings.pretrained
    if not pretrained or same_hub_model(pretrained, first.pretrained):
        pretrained = first.pretrained
    device = resolve_device(settings.device)
    precision = parse_precision(settings.precision)
    loaded = load_model(first.model, pretrained, device="cpu")
    check_same_model(loaded, first, features_uri)
    greedy = GreedySettings(seq_len=settings.seq_len, min_seq_len=settings.min_seq_len)
    decoder = make_decoder(loaded, precision=precision, settings=greedy).to(device)
    made_by = {**loaded.identity(), "pretrained": pretrained, "precision": precision,
               "seq_len": greedy.seq_len, "min_seq_len": greedy.min_seq_len, **decoder_start(decoder),
               **decoder_end_and_rules(decoder)}
    if precision == "float32":  # the exact path: float32 computed as float32, also on Ampere and newer GPUs
        made_by["tf32"] = exact_float32_math()["tf32"]
    if settings.grounding:  # named only when on: captions made before the option keep matching their manifests
        made_by["grounding"] = True
    return [caption_shard(d, out_uri, decoder, loaded, settings, device, made_by) for d in shard_dirs]
