"""Hugging Face model folders of any size with random weights, written without building the
model in memory (tests and benchmarks of what loading costs): the config, the tokenizer and
processor files of the family's tiny model shipped with the package, and random weights in
safetensors shards, with an index when there are several, as hub folders hold them."""

from __future__ import annotations

import json
import os
import shutil

import torch

from latent_verbalizer.components.common.model_families import LLAVA
from latent_verbalizer.components.common.model_families.hf_loading import CONFIG_DIR


def save_model_folder(loaded, folder, **generation) -> str:
    """A loaded Hugging Face model saved as a model folder (weights, tokenizer, processor), its
    generation config updated with ``generation`` (e.g. ``eos_token_id=[a, b]``)."""
    loaded.model.save_pretrained(folder)
    if loaded.family == LLAVA:
        loaded.processor.save_pretrained(folder)
    else:
        loaded.tokenizer.save_pretrained(folder)
        loaded.image_processor.save_pretrained(folder)
    if generation:
        path = os.path.join(folder, "generation_config.json")
        with open(path) as f:
            config = json.load(f)
        config.update(generation, _from_model_config=False)
        with open(path, "w") as f:
            json.dump(config, f)
    return str(folder)


def write_random_model_folder(model_class, config, folder: str, tiny: str, dtype: torch.dtype = torch.float16,
                              shard_bytes: int = 1 << 30, seed: int = 0) -> int:
    """Writes the folder; returns the bytes of its weights. ``tiny``: the tiny model (e.g.
    ``tiny-random-llava``) whose tokenizer and processor files go with it."""
    from accelerate import init_empty_weights
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    source = os.path.join(CONFIG_DIR, tiny)
    for name in os.listdir(source):
        if name != "config.json":
            shutil.copy(os.path.join(source, name), folder)
    config.save_pretrained(folder)
    with init_empty_weights(include_buffers=True):
        skeleton = model_class(config)
    shapes = {name: (t.shape, t.dtype) for name, t in skeleton.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    shards, shard, size, total = [], {}, 0, 0
    for name, (shape, kind) in sorted(shapes.items()):
        tensor = (torch.randn(shape, generator=generator) * 0.02).to(dtype) if kind.is_floating_point else torch.zeros(shape, dtype=kind)
        shard[name] = tensor
        size += tensor.numel() * tensor.element_size()
        if size >= shard_bytes:
            shards.append(shard)
            total += size
            shard, size = {}, 0
    if shard:
        shards.append(shard)
        total += size
    if len(shards) == 1:
        save_file(shards[0], os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        return total
    weight_map = {}
    for i, tensors in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, os.path.join(folder, file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, file))
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    return total


LOAD_AND_MEASURE = """
import json, resource, sys
import torch, transformers, accelerate, safetensors, open_clip  # imported before the baseline: not the load's cost
from transformers import BlipForConditionalGeneration, LlavaForConditionalGeneration, VisionEncoderDecoderModel
from latent_verbalizer.components.common.model_families import load_model

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

model, pretrained, part = sys.argv[1], sys.argv[2] or None, sys.argv[3]
imports_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # Linux: the peak (VmHWM, ru_maxrss) starts again from the present size
before = status("VmRSS")
loaded = load_model(model, pretrained) if part == "-" else load_model(model, pretrained, part=part)
tokens, width = loaded.feature_shape()  # one forward of the vision tower, as extract makes at its start
print(json.dumps({"imports_peak_kib": imports_peak, "baseline_kib": before, "peak_kib": status("VmHWM"),
                  "rusage_peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "tokens": tokens, "width": width}))
"""


def load_peak_memory(model: str, part: str | None, pretrained: str | None = None) -> dict:
    """Peak host memory (KiB) of loading ``model`` (``part`` of it, or the call without ``part``
    when None, as extract made it before parts existed) and running one probe image through its
    vision tower, in a fresh Python process (Linux): ``peak_kib`` is the resident peak from the
    load on, ``baseline_kib`` the resident size before it (after the imports; torch's alone are
    ~0.7 GB), ``imports_peak_kib`` the peak of the imports."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", LOAD_AND_MEASURE, model, pretrained or "", part or "-"],
                         capture_output=True, text=True, env=dict(os.environ, TQDM_DISABLE="1"))
    if out.returncode != 0:
        raise RuntimeError(f"loading {model} ({part}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
