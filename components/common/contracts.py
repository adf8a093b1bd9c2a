"""The data contracts: the seams between components, in one module every reader and
writer imports. Change them only on purpose, everywhere (bump the version).

- Input shards: webdataset tars, one sample per image (``jpg``/``jpeg``/``png``/``webp``,
  optional ``json`` with ``{"captions": [...]}`` or ``txt``); ``__key__`` is the image id.
- Features (extract -> caption): per shard, safetensors chunks (one per image batch, one
  tensor per layer ``layer_{i}`` of shape ``[n, tokens, width]``) and a manifest written
  last. See ``components.common.features``.
- Captions (caption -> categorize, report): Parquet, a row per (image, layer).
- Labels (categorize -> report): Parquet, a row per distinct caption; and a per-layer
  aggregate table.
- A failed shard (extract -> caption -> categorize, report, in the pipeline): the step's small
  pointer says ``{"failed": reason, "shard": uri, "step": where}`` instead of pointing at data
  (``FailedShard``); later steps pass it on or leave it out, and the report lists it.

Reading and writing the tables: ``common.tables``; where a run's data goes: ``common.storage.run_prefix``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field

import pyarrow as pa

from . import storage

FEATURES_FORMAT = "latent-verbalizer/features"
FEATURES_VERSION = 2  # 2: per-part sha256 (header and each layer), checked by every read
CAPTIONS_FORMAT = "latent-verbalizer/captions"
CAPTIONS_VERSION = 1

# Model families (common.model_families) and the keys that record them in the features manifest and in
# the captions' provenance parameters: outputs made before families existed have neither (open_clip CoCa).
FAMILY_COCA = "open_clip-coca"
FAMILY_BLIP = "hf-blip"
FAMILY_VISION_ENCODER_DECODER = "hf-vision-encoder-decoder"
FAMILY_LLAVA = "hf-llava"
MODEL_FAMILY_KEY = "model_family"
LAYER_NUMBERING_KEY = "layer_numbering"  # {"n_layers", "normal_layer", "scheme", "labels": [one per block]}
LABELS_FORMAT = "latent-verbalizer/labels"
LABELS_VERSION = 1

MANIFEST_NAME = "manifest.json"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")

# ------------------------------------------------------------------ Parquet schemas

CAPTIONS_SCHEMA = pa.schema([
    pa.field("image_key", pa.string(), nullable=False),
    pa.field("shard", pa.string(), nullable=False),
    pa.field("layer", pa.int32(), nullable=False),          # 0-based residual block index
    pa.field("caption", pa.string(), nullable=False),
    pa.field("token_ids", pa.list_(pa.int32()), nullable=False),  # without the start token
    pa.field("n_tokens", pa.int32(), nullable=False),
    pa.field("stop", pa.string(), nullable=False),           # "eos", "pad" or "length"
    pa.field("entropy_bits", pa.float32(), nullable=False),
    pa.field("mean_logprob", pa.float32(), nullable=False),
])

# Opt-in (caption step's ``grounding``, issue #21): each caption's per-patch map, gradient x input
# after the family's first per-token normalisation (see caption/grounding), on the patch tokens
# only, row-major over the encoder's patch grid, normalised to sum to 1, in float16. A captions
# table with maps has this column after the others, and the grid ``[rows, cols]`` in its
# ``latent_verbalizer`` metadata under CAPTIONS_META_GROUNDING_GRID; readers that do not show maps
# read it with CAPTIONS_SCHEMA, which leaves the column out.
GROUNDING_FIELD = pa.field("grounding", pa.list_(pa.float16()), nullable=True)
CAPTIONS_GROUNDED_SCHEMA = CAPTIONS_SCHEMA.append(GROUNDING_FIELD)
CAPTIONS_META_GROUNDING_GRID = "grounding_grid"

LABEL_PART = pa.struct([pa.field("text", pa.string()), pa.field("labels", pa.list_(pa.string()))])
LABELS_SCHEMA = pa.schema([
    pa.field("caption", pa.string(), nullable=False),
    pa.field("parts", pa.list_(LABEL_PART), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
])

# Flags in the labels table's ``status`` (``;``-joined; "ok" when none). Answers with one of
# NOT_AGGREGATED are left out of the per-layer shares, as the study did.
STATUS_OK = "ok"
PART_NOT_IN_CAPTION = "part_not_in_caption"
LABEL_NOT_IN_LIST = "label_not_in_list"
NO_PARTS = "no_parts"
UNPARSEABLE = "unparseable"
TRUNCATED = "truncated"           # raw answer cut off: complete parts salvaged, not aggregated
ANSWER_LIMIT = "answer_limit"     # the answer reached a bound of its schema (parts, part length or tokens)
NOT_AGGREGATED = (UNPARSEABLE, TRUNCATED, NO_PARTS)

# The category of a part whose first label the merge table does not list (the study's rule).
UNKNOWN = "UNKNOWN"

AGGREGATE_SCHEMA = pa.schema([
    pa.field("layer", pa.int32(), nullable=False),
    pa.field("category", pa.string(), nullable=False),
    pa.field("share_percent", pa.float64(), nullable=False),
    pa.field("n_captions", pa.int32(), nullable=False),
])


# What the aggregate table's metadata carries (besides ``made_by``), so a reader needs nothing else:
AGGREGATE_META_CATEGORY_MAP = "category_map"      # {label: category} (the merge table, inverted)
AGGREGATE_META_CATEGORIES = "categories"          # every category, in the table's order (UNKNOWN included)
AGGREGATE_META_STATUS_COUNTS = "status_counts"    # {status: distinct captions} of the labels table
AGGREGATE_META_LAYER_STATUS_COUNTS = "layer_status_counts"  # {layer: {status: caption rows}}
AGGREGATE_META_NOT_AGGREGATED = "not_aggregated"  # the status flags left out of the shares
# What the labels table's metadata carries (besides ``made_by``):
LABELS_META_ANSWER_SCHEMAS = "answer_schemas"     # the exact JSON schemas answers were held to (see categorize)
LABELS_META_IMPORT_RECOVERY = "import_raw_recovery"  # --import-raw: how each layer's answers were parsed


def part_category(labels, category_map: dict[str, str]) -> str:
    """The category of one caption part: its FIRST label through the merge table, UNKNOWN
    when the table does not list it (the study's rule; a part without labels counts as "")."""
    first = labels[0] if labels else ""
    return category_map.get(first if first is not None else "", UNKNOWN)




def parse_partition_count(value, parameter: str = "categorize_partitions") -> int:
    """The labelling's partition count, a whole number >= 1 (a pipeline parameter preflight checks
    and the labelling steps use); a ValueError naming the parameter and the fix."""
    text = str(value).strip()
    if isinstance(value, float) and value.is_integer():  # kfp.local hands list and int parameters on as floats
        text = str(int(value))
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise ValueError(f"{parameter}={value!r} is not a partition count: give a whole number, at least 1 "
                         "(1: one labelling task; N: N tasks on N nodes, each with categorize_gpus GPUs)")
    return int(text)












def caption_hash(caption: str) -> str:
    """Stable key of a caption's text (labels are computed once per distinct caption)."""
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()[:16]


# ------------------------------------------------------------------ manifests

@dataclass
class SkippedSample:
    key: str
    reason: str


@dataclass
class ChunkInfo:
    """One feature chunk of a shard, as its manifest lists it.

    ``sha256`` holds a digest per part of the safetensors file: ``header`` (the 8-byte
    length and the JSON header) and ``layer_<i>`` (each tensor's bytes). Readers fetch
    parts with ranged reads (only the layers they want), so each part is checked on its
    own as it arrives; the parts cover every byte of the file.
    """

    key: str        # object name relative to the shard's folder
    images: int
    bytes: int
    sha256: dict[str, str]


@dataclass
class FeatureManifest:
    """Written last into a shard's feature folder: a shard without it is not done."""

    shard: str
    model: str
    pretrained: str
    layers: list[int]
    dtype: str
    tokens: int
    width: int
    image_count: int
    objects: list[ChunkInfo] = field(default_factory=list)
    skipped: list[SkippedSample] = field(default_factory=list)
    made_by: dict = field(default_factory=dict)
    model_family: str = ""          # common.model_families (empty in manifests from before families: CoCa)
    layer_numbering: dict = field(default_factory=dict)  # LayerNumbering.to_json(): the model's own layer names
    format: str = FEATURES_FORMAT
    version: int = FEATURES_VERSION

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def n_layers(self) -> int | None:
        """Blocks of the model's vision encoder (None in manifests from before families)."""
        return self.layer_numbering.get("n_layers")

    @classmethod
    def from_json(cls, d: dict) -> "FeatureManifest":
        if d.get("format") != FEATURES_FORMAT:
            raise ValueError(f"not a features manifest (format={d.get('format')!r})")
        if d.get("version") != FEATURES_VERSION:
            raise ValueError(f"features manifest version {d.get('version')} is not {FEATURES_VERSION}; re-run extract")
        d = dict(d)
        d["objects"] = [ChunkInfo(**o) for o in d.get("objects", [])]
        d["skipped"] = [SkippedSample(**s) for s in d.get("skipped", [])]
        return cls(**d)


FAILED_KEY = "failed"  # in a step's pointer: the shard failed, with this reason (FailedShard)


@dataclass
class FailedShard:
    """A shard that is bad for a reason retrying cannot change (not a tar, no images, features
    of other parameters, a checksum mismatch): in the pipeline, the step that found it writes
    this record as its pointer instead of failing, so the other shards go on; caption passes it
    on, categorize leaves it out, the report lists it with its reason."""

    shard: str      # the input shard's URI
    reason: str     # the error, naming the input and the fix
    step: str       # the step that found it: "extract" or "caption"

    def to_pointer(self) -> dict:
        return {FAILED_KEY: self.reason, "shard": self.shard, "step": self.step}

    @classmethod
    def from_pointer(cls, pointer: dict) -> "FailedShard | None":
        """The record in a step's pointer; None for a pointer at finished data."""
        if FAILED_KEY not in pointer:
            return None
        return cls(shard=pointer.get("shard", "?"), reason=str(pointer[FAILED_KEY]), step=pointer.get("step", "?"))


def read_caption_pointers(paths: list[str]) -> tuple[list[str], list[FailedShard]]:
    """The caption step's pointer files, as KFP's ``Collected`` hands them to a later step: the
    captions URIs of the shards that finished, and the shards that failed (in order)."""
    uris, failed = [], []
    for path in paths:
        with open(path) as f:
            pointer = json.load(f)
        bad = FailedShard.from_pointer(pointer)
        if bad is not None:
            failed.append(bad)
        else:
            uris.append(pointer["captions"])
    return uris, failed


def shard_name(shard_uri: str) -> str:
    """The name a shard's outputs are filed under: its file name without ``.tar``."""
    name = storage.basename(shard_uri)
    return name[:-4] if name.endswith(".tar") else name


def check_unique_shard_names(shard_uris: list[str]) -> None:
    """Outputs are filed under the shard's name: two shards with one name would overwrite each other."""
    seen: dict[str, str] = {}
    for uri in shard_uris:
        name = shard_name(uri)
        if name in seen:
            raise ValueError(f"shards {seen[name]} and {uri} have the same name {name!r}, and their outputs would "
                             "overwrite each other: rename one, or run them with different storage prefixes")
        seen[name] = uri
