"""What a run will make and start, worked out before it starts (preflight's Markdown artifact).

Sizes come from the run's inputs and the model's config, never from a guess:

- images: the first shard's images counted (read as extract reads it), times the number of
  shards when there are more (said to be an estimate: shards may differ);
- (image, layer) captions: images x selected layers;
- feature bytes: captions x tokens x width x the dtype's bytes, tokens and width from the
  vision tower's config (``vision_feature_shape``: the patch grid plus the class token);
- answers to generate: at most one per caption (identical captions are labelled once); where
  a ratio of distinct captions was measured for the model (``measured_rates.json``), the
  estimate at that ratio, naming where it was measured;
- GPU tasks: a task per shard for extract and for caption (1 GPU each, ``fan_out`` at once),
  one per labelling partition (``categorize_gpus`` each, all at once).

Time and GPU-hours only from rates measured on the run's GPU, named by the GPU steps' node
selector (``nvidia.com/gpu.product``, as NVIDIA's GPU feature discovery labels nodes), in
``measured_rates.json`` (the machine-readable table behind benchmarks/RESULTS.md). Where no
rate was measured for that GPU, model and setting, the page says so and gives no time.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from ..common.model_families import is_hf_model
from ..common.precision import parse_dtype
from ..common.tar_samples import iter_samples

RATES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "measured_rates.json")
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def vision_feature_shape(model: str, pretrained: str = "", pins: dict | None = None) -> tuple[int, int]:
    """(tokens, width) of one block's output for one image, from the vision tower's config alone
    (no weights): the patch grid plus the class token, and the tower's width."""
    if not is_hf_model(model):
        import open_clip

        from ..common.model_families.coca_loading import architecture_name, check_coca_name

        check_coca_name(model)
        vision = open_clip.get_model_config(architecture_name(model))["vision_cfg"]
        side, patch, width = vision["image_size"], vision["patch_size"], vision["width"]
    else:
        from ..common.model_families import hf_loading as hf
        from ..common.model_families.hub_revision import pin_names

        model, pretrained = pin_names(model, pretrained or None, pins)
        config = hf.read_config(hf.resolve_source(model, pretrained, config_only=True))
        vision = config.encoder if hf.family_of(config) == hf.VISION_ENCODER_DECODER else config.vision_config
        side, patch, width = vision.image_size, vision.patch_size, vision.hidden_size
    side = max(side) if isinstance(side, (list, tuple)) else side
    patch = max(patch) if isinstance(patch, (list, tuple)) else patch
    return (side // patch) ** 2 + 1, width


def count_images(shard_uri: str) -> int:
    """Images of a shard, as extract reads them (samples without an image are not counted)."""
    return sum(1 for _ in iter_samples(shard_uri, skipped=[]))


def gpu_product(node_selector: dict | None) -> str | None:
    """The GPU the GPU steps run on, from their node selector; None when it does not name one."""
    value = (node_selector or {}).get(GPU_PRODUCT_LABEL)
    return str(value) if value else None


def _same_gpu(a: str, b: str) -> bool:
    """GPU names compared as a node label writes them: case and separators aside."""
    return re.sub(r"[^a-z0-9]", "", a.lower()) == re.sub(r"[^a-z0-9]", "", b.lower())


@dataclass
class MeasuredRates:
    """The table of ``measured_rates.json``: rates per step, GPU and setting; distinct-caption ratios."""

    rates: list[dict] = field(default_factory=list)
    dedup: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, path: str = RATES_FILE) -> "MeasuredRates":
        with open(path) as f:
            data = json.load(f)
        return cls(list(data.get("rates", [])), list(data.get("dedup", [])))

    def rate(self, step: str, gpu: str | None, **setting) -> dict | None:
        """The entry measured for ``step`` on ``gpu`` with exactly this setting (model, dtype, ...), or None."""
        if gpu is None:
            return None
        for entry in self.rates:
            if (entry.get("step") == step and _same_gpu(str(entry.get("gpu_product", "")), gpu)
                    and all(str(entry.get(k)) == str(v) for k, v in setting.items())):
                return entry
        return None

    def distinct_ratio(self, model: str) -> dict | None:
        return next((d for d in self.dedup if d.get("model") == model), None)


@dataclass
class RunPlan:
    """What the run is given (parameters as preflight checked them)."""

    shards: list[str]
    model: str
    n_layers: int                  # blocks of the model
    layers: list[int]              # the ones captioned
    dtype: str                     # stored features
    precision: str                 # caption decoding
    llm_model: str
    llm_gpus: int
    partitions: int
    fan_out: int                   # shards in flight (lverb compile --parallelism)
    gpu: str | None                # nvidia.com/gpu.product of the GPU steps, if named
    pretrained: str = ""
    pins: dict | None = None


@dataclass
class RunSize:
    plan: RunPlan
    first_shard_images: int
    tokens: int
    width: int

    @property
    def images(self) -> int:
        return self.first_shard_images * len(self.plan.shards)

    @property
    def images_exact(self) -> bool:
        return len(self.plan.shards) == 1

    @property
    def captions(self) -> int:
        return self.images * len(self.plan.layers)

    @property
    def feature_bytes(self) -> int:
        return self.captions * self.tokens * self.width * DTYPE_BYTES[parse_dtype(self.plan.dtype)]


def measure_run(plan: RunPlan) -> RunSize:
    tokens, width = vision_feature_shape(plan.model, plan.pretrained, plan.pins)
    return RunSize(plan, count_images(plan.shards[0]), tokens, width)
