"""Loading only the vision tower of a captioner: what the extract step runs.

Extract runs the vision encoder alone, yet loading the whole model for it costs the whole
model in host memory (LLaVA-1.5-7B in float32: about 28 GB per pod, for a 0.3B-parameter
tower). Here the model is built with its parameters on the ``meta`` device (no memory;
buffers such as ``position_ids`` are made for real, as the constructor makes them), and
only the tower's tensors are read from the checkpoint's safetensors files (only the shards
that hold them, for a sharded checkpoint) and cast to float32, the dtype the full load uses.
Checkpoint keys are mapped to the model's names by transformers' own renamings (the ones
``from_pretrained`` applies: older checkpoints name ViT's and LLaVA's weights otherwise).
So the tower's weights, and the features, are exactly the full load's; every other part of
the model stays on ``meta`` and must not be run.

CoCa's open_clip checkpoints are read the same way (``coca_loading.load_coca`` with
``load_tower_from_safetensors``). When the checkpoint cannot be read this way (pickled
``.bin`` weights only, a tower weight that is not in the checkpoint or needs more than a
renaming, a shape that differs), the caller loads the whole model instead: exact first,
small second.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict

import torch

from .base import BLIP, LLAVA, VISION_ENCODER_DECODER

log = logging.getLogger(__name__)

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                      "BOOL": torch.bool}
VISION_TOWERS = {BLIP: "vision_model", VISION_ENCODER_DECODER: "encoder", LLAVA: "model.vision_tower"}  # module paths


def load_vision_tower_only(model_class, source, config, family: str) -> torch.nn.Module | None:
    """The model of ``model_class`` with only its vision tower's weights loaded (float32, CPU, eval
    mode; everything else on ``meta``), or None where the checkpoint cannot be read so (see the module)."""
    files = _safetensors_files(source)
    if files is None:
        log.info("%s: no safetensors weights; loading the whole model to run its vision tower", source.location)
        return None
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        net = model_class(config)
    path = VISION_TOWERS[family]
    tower = net.get_submodule(path)
    wanted = tower.state_dict(keep_vars=True)
    located = _locate(net, path, wanted, files)
    if located is None:
        log.info("%s: the checkpoint does not hold every weight of %s under a name transformers maps to it; "
                 "loading the whole model", source.location, path)
        return None
    state = _read_tensors(located, wanted)
    if state is None:
        log.info("%s: %s's weights in the checkpoint differ in shape from the model's (or have a dtype safetensors "
                 "readers here do not know); loading the whole model", source.location, path)
        return None
    tower.load_state_dict(state, strict=True, assign=True)
    return net.eval()


def load_tower_from_safetensors(tower: torch.nn.Module, file: str, prefix: str) -> bool:
    """Fills ``tower``'s parameters (on ``meta``) from the keys ``prefix + name`` of one safetensors
    file, in the dtype the tower was built in; False (nothing loaded) where one is missing or differs."""
    keys = _keys_of(file)
    wanted = tower.state_dict(keep_vars=True)
    if not all(prefix + name in keys for name in wanted):
        return False
    state = _read_tensors({name: (file, prefix + name) for name in wanted}, wanted)
    if state is None:
        return False
    tower.load_state_dict(state, strict=True, assign=True)
    return True


def _locate(net, path: str, wanted: dict, files: dict[str, str]) -> dict[str, tuple[str, str]] | None:
    """tower key -> (file, checkpoint key), naming checkpoint keys as ``from_pretrained`` does (its
    renamings and base-model prefix); None if a tower key is missing or comes from a converter
    (a weight made from several, not just renamed)."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key
    except ImportError:  # another transformers: the whole model is loaded instead
        return None
    transforms = get_model_conversion_mapping(net)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    model_keys = net.state_dict(keep_vars=True)
    prefix = path + "."
    located = {}
    for key in files:
        renamed, converter = rename_source_key(key, renamings, converters, net.base_model_prefix, model_keys)
        if renamed not in model_keys and key in model_keys:  # as from_pretrained: a key that needs no renaming
            renamed, converter = rename_source_key(key, [], [], net.base_model_prefix, model_keys)
        if renamed.startswith(prefix) and renamed[len(prefix):] in wanted:
            if converter is not None:
                return None
            located[renamed[len(prefix):]] = key
    if located.keys() != wanted.keys():
        return None
    return {name: (files[key], key) for name, key in located.items()}


def _read_tensors(located: dict[str, tuple[str, str]], wanted: dict) -> dict[str, torch.Tensor] | None:
    """The tower's tensors, in the dtype the model built them in (float32). Read with plain file
    reads at the header's offsets into one reused buffer, then copied (cast) into the tensor: no
    memory map (a mapped checkpoint's pages count in the pod's resident memory next to the float32
    copies) and no per-tensor staging buffer left behind (freed float16 buffers fragment the heap)."""
    by_file = defaultdict(list)
    for name, (file, key) in located.items():
        by_file[file].append((name, key))
    state = {}
    for file, names in by_file.items():
        header, data_start = _header(file)
        entries = [(name, key, header[key]) for name, key in names]
        for name, key, entry in entries:
            if entry["dtype"] not in SAFETENSORS_DTYPES or tuple(entry["shape"]) != tuple(wanted[name].shape):
                return None
        scratch = torch.empty(max(end - begin for *_, e in entries for begin, end in [e["data_offsets"]]),
                              dtype=torch.uint8)
        with open(file, "rb", buffering=0) as f:
            for name, key, entry in entries:
                begin, end = entry["data_offsets"]
                view, done = memoryview(scratch[:end - begin].numpy()), 0
                f.seek(data_start + begin)
                while done < len(view):
                    n = f.readinto(view[done:])
                    if not n:
                        raise EOFError(f"{file}: {key} ends past the end of the file")
                    done += n
                source = scratch[:end - begin].view(SAFETENSORS_DTYPES[entry["dtype"]]).reshape(entry["shape"])
                target = wanted[name].dtype if source.is_floating_point() else source.dtype
                state[name] = torch.empty(source.shape, dtype=target).copy_(source)
    return state


def _header(file: str) -> tuple[dict, int]:
    """A safetensors file's header (tensor name -> dtype, shape, data offsets) and where its data starts."""
    with open(file, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header, 8 + size


def _safetensors_files(source) -> dict[str, str] | None:
    """checkpoint key -> local file holding it, over the model's safetensors (a hub model's files are
    fetched into the Hugging Face cache, only the shards the tower needs later); None without any."""
    if source.on_hub:
        return _hub_safetensors_files(source)
    index = os.path.join(source.location, SAFETENSORS_INDEX)
    if os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        return {key: os.path.join(source.location, file) for key, file in weight_map.items()}
    single = os.path.join(source.location, SAFETENSORS_FILE)
    if not os.path.isfile(single):
        return None
    return _keys_of(single)


def _keys_of(file: str) -> dict[str, str]:
    return dict.fromkeys(_header(file)[0], file)


class _LazyHubFiles(dict):
    """checkpoint key -> local path of its shard, downloading a shard the first time one of its keys is read."""

    def __init__(self, weight_map: dict[str, str], fetch):
        super().__init__(weight_map)
        self.fetch = fetch
        self.paths: dict[str, str] = {}

    def __getitem__(self, key: str) -> str:
        shard = super().__getitem__(key)
        if shard not in self.paths:
            self.paths[shard] = self.fetch(shard)
        return self.paths[shard]


def _hub_safetensors_files(source) -> dict[str, str] | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    options = {"token": os.environ.get("HF_TOKEN") or None, "revision": getattr(source, "revision", None)}

    def fetch(name: str) -> str | None:
        try:
            return hf_hub_download(source.location, name, **options)
        except EntryNotFoundError:
            return None

    index = fetch(SAFETENSORS_INDEX)
    if index is not None:
        with open(index) as f:
            return _LazyHubFiles(json.load(f)["weight_map"], fetch)
    single = fetch(SAFETENSORS_FILE)
    return _keys_of(single) if single is not None else None
