"""Benchmark: peak host memory of loading a model per step and family, the whole model (what
extract loaded before ``part``, and what caption loads) against the vision tower alone (what
extract loads now), each in a fresh Python process (``tests.model_folders.load_peak_memory``:
the resident peak from the load on, after the imports, including one probe image through the
vision tower).

Models of real size with random weights, written to disk as safetensors without being built
in memory, stored in the dtype their hub checkpoints use:

- ``blip``: BLIP-base (ViT-B/16 at 384 px + the 12-layer BERT decoder), float32 as Salesforce's;
- ``vit-gpt2``: ViT-B/16 + GPT-2 124M (nlpconnect/vit-gpt2-image-captioning's shapes), float32;
- ``llava``: llava-1.5's vision tower (CLIP ViT-L/14 at 336 px) + a Llama of LLaVA-1.5-7B's width
  (4096, 32k vocabulary) with ``--llava-layers`` of its 32 layers, float16 as llava-hf's: the
  language model dominates, as in the real one;
- ``coca``: open_clip ``coca_ViT-L-14`` (the study's model) from a float32 safetensors checkpoint
  file (as the hub's ``open_clip_model.safetensors``); whole: open_clip's own load.

The bytes per parameter measured here give the estimates for the real models (LLaVA-1.5-7B,
CoCa ViT-L/14) that size the Kubernetes memory requests.

    python benchmarks/host_memory.py                      # all four; ~8 GB of disk under --workdir
    python benchmarks/host_memory.py --families blip,llava --results benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from markdown_results import publish  # noqa: E402  (benchmarks/, beside this script)

from latent_verbalizer.components.common.model_families import VISION  # noqa: E402
from tests.model_folders import load_peak_memory, write_random_model_folder  # noqa: E402

LLAVA_7B = {"params": 7.06e9, "tower": 0.304e9}     # llava-1.5-7b-hf: Llama-2-7B + CLIP ViT-L/14-336 + projector
GIB = 1 << 30


def hf_model(family: str, llava_layers: int):
    """(model class, config, tiny model for the tokenizer/processor files, stored dtype, tower path)."""
    from transformers import (
        AutoConfig,
        BlipConfig,
        BlipForConditionalGeneration,
        CLIPVisionConfig,
        GPT2Config,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
    )

    from latent_verbalizer.components.common.model_families.hf_loading import CONFIG_DIR

    tiny = {"blip": "tiny-random-blip", "vit-gpt2": "tiny-random-vit-gpt2", "llava": "tiny-random-llava"}[family]
    old = AutoConfig.from_pretrained(os.path.join(CONFIG_DIR, tiny))
    if family == "blip":
        t = old.text_config
        config = BlipConfig(text_config=dict(bos_token_id=t.bos_token_id, sep_token_id=t.sep_token_id,
                                             pad_token_id=t.pad_token_id, eos_token_id=t.eos_token_id),
                            vision_config=dict(image_size=384, patch_size=16))
        return BlipForConditionalGeneration, config, tiny, torch.float32, "vision_model"
    if family == "vit-gpt2":
        d = old.decoder
        config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(
            ViTConfig(),
            GPT2Config(bos_token_id=d.bos_token_id, eos_token_id=d.eos_token_id, add_cross_attention=True, is_decoder=True))
        config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = (
            old.decoder_start_token_id, old.pad_token_id, old.eos_token_id)
        return VisionEncoderDecoderModel, config, tiny, torch.float32, "encoder"
    t = old.text_config
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                                       image_size=336, patch_size=14, projection_dim=768),
        text_config=LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=llava_layers,
                                num_attention_heads=32, num_key_value_heads=32, bos_token_id=t.bos_token_id,
                                eos_token_id=t.eos_token_id, pad_token_id=t.pad_token_id, max_position_embeddings=4096),
        image_token_id=old.image_token_id, vision_feature_layer=-2, vision_feature_select_strategy="default")
    return LlavaForConditionalGeneration, config, tiny, torch.float16, "model.vision_tower"


def param_counts(model_class, config, tower: str) -> tuple[int, int]:
    from accelerate import init_empty_weights

    with init_empty_weights():
        net = model_class(config)
    return sum(p.numel() for p in net.parameters()), sum(p.numel() for p in net.get_submodule(tower).parameters())


def write_coca_checkpoint(path: str) -> tuple[int, int, int]:
    """A random ``coca_ViT-L-14`` checkpoint (float32 safetensors, open_clip's names); (bytes, params, tower params)."""
    import open_clip
    from accelerate import init_empty_weights
    from safetensors.torch import save_file

    with init_empty_weights(include_buffers=True):
        net = open_clip.create_model("coca_ViT-L-14", pretrained=None, device="meta")
    g = torch.Generator().manual_seed(0)
    tensors = {k: torch.randn(v.shape, generator=g) * 0.02 for k, v in net.state_dict().items()}
    save_file(tensors, path)
    return (sum(t.numel() * 4 for t in tensors.values()), sum(p.numel() for p in net.parameters()),
            sum(p.numel() for p in net.visual.parameters()))


def grown(measure: dict) -> int:
    return (measure["peak_kib"] - measure["baseline_kib"]) * 1024


def run(families: list[str], workdir: str, llava_layers: int) -> tuple[list[dict], int]:
    rows, baseline = [], 0
    for family in families:
        folder = os.path.join(workdir, family)
        shutil.rmtree(folder, ignore_errors=True)
        if family == "coca":
            os.makedirs(folder)
            checkpoint = os.path.join(folder, "open_clip_model.safetensors")
            stored, params, tower = write_coca_checkpoint(checkpoint)
            whole = load_peak_memory("coca_ViT-L-14", None, pretrained=checkpoint)
            part = load_peak_memory("coca_ViT-L-14", VISION, pretrained=checkpoint)
            name, dtype = "coca_ViT-L-14 (open_clip)", "float32"
        else:
            model_class, config, tiny, dtype_, tower_path = hf_model(family, llava_layers)
            stored = write_random_model_folder(model_class, config, folder, tiny, dtype=dtype_, shard_bytes=2 * GIB)
            params, tower = param_counts(model_class, config, tower_path)
            whole = load_peak_memory(folder, None)
            part = load_peak_memory(folder, VISION)
            name = {"blip": "BLIP-base", "vit-gpt2": "ViT-B/16 + GPT-2",
                    "llava": f"CLIP ViT-L/14-336 + Llama 7B width, {llava_layers} of 32 layers"}[family]
            dtype = str(dtype_).removeprefix("torch.")
        baseline = max(baseline, whole["baseline_kib"] * 1024, part["baseline_kib"] * 1024)
        rows.append(dict(family=family, name=name, params=params, tower=tower, stored=stored, dtype=dtype,
                         whole=grown(whole), part=grown(part)))
        print(f"{family}: whole {grown(whole) / GIB:.2f} GiB, vision tower {grown(part) / GIB:.2f} GiB", file=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)
    return rows, baseline


def report(rows: list[dict], baseline: int) -> str:
    lines = [f"## Host memory per step (this project's development machine: 2-core CPU box, x86_64, no GPU; "
             f"torch {torch.__version__}, Python {platform.python_version()})", "",
             "`python benchmarks/host_memory.py`: peak resident memory that loading adds, in a fresh process, "
             "after the imports (the process holds "
             f"{baseline / GIB:.2f} GiB before loading: Python, torch with its CUDA libraries, transformers, open_clip). "
             "Whole model: what extract loaded before (and what caption loads); vision tower: extract now "
             "(`load_model(..., part=\"vision\")`). Random weights of real size, stored as the hub stores them.", "",
             "| family | model | parameters (vision tower) | checkpoint | whole model | vision tower | saving | "
             "bytes/param whole | bytes/param tower |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['family']} | {r['name']} | {r['params'] / 1e6:.0f}M ({r['tower'] / 1e6:.0f}M) | "
                     f"{r['stored'] / GIB:.2f} GiB {r['dtype']} | {r['whole'] / GIB:.2f} GiB | {r['part'] / GIB:.2f} GiB | "
                     f"{r['whole'] / max(r['part'], 1):.1f}x | {r['whole'] / r['params']:.2f} | {r['part'] / r['tower']:.2f} |")
    llava = next((r for r in rows if r["family"] == "llava"), None)
    if llava is not None:
        whole_bpp, tower_bpp = llava["whole"] / llava["params"], llava["part"] / llava["tower"]
        lines += ["", f"Estimate for LLaVA-1.5-7B (float16 checkpoint, {LLAVA_7B['params'] / 1e9:.2f}B parameters, "
                  f"{LLAVA_7B['tower'] / 1e9:.2f}B in the vision tower), from the measured bytes per parameter: "
                  f"whole model (caption; extract before) {LLAVA_7B['params'] * whole_bpp / GIB:.1f} GiB, "
                  f"vision tower (extract now) {LLAVA_7B['tower'] * tower_bpp / GIB:.2f} GiB, on top of the "
                  f"{baseline / GIB:.1f} GiB process."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="blip,vit-gpt2,llava,coca")
    parser.add_argument("--workdir", default="/tmp/lverb-host-memory", help="where the model folders are written (removed after)")
    parser.add_argument("--llava-layers", type=int, default=2, help="language-model layers of the LLaVA (7B has 32)")
    parser.add_argument("--results", help="also append the report to this Markdown file")
    args = parser.parse_args(argv)
    rows, baseline = run([f for f in args.families.split(",") if f], args.workdir, args.llava_layers)
    text = report(rows, baseline)
    publish(text, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
