"""Benchmark per model family: captions/s of our path (every (image, layer) row batched across
images and layers through the shared greedy loop and the model's own KV cache) against the
model's own ``generate`` called once per layer (the naive way), in the same run, on the same
per-layer features, with the same rules (greedy, min/max length, forced end token).

The naive way per family: BLIP -- ``text_decoder.generate`` with the layer's states as
``encoder_hidden_states`` (what ``BlipForConditionalGeneration.generate`` does after its
vision model); VisionEncoderDecoder -- ``model.generate`` with the layer's normed states as
``encoder_outputs``; LLaVA -- ``model.generate`` with ``vision_feature_layer=k+1`` on the
pixels (the model's own switch; it re-runs the vision tower per layer).

    python benchmarks/families.py                 # CPU: tiny-random models of the real classes
    python benchmarks/families.py --size base     # base-size random models (BLIP-base, ViT-B + GPT-2,
                                                  # CLIP ViT-L/14-336 + a 1B Llama); a GPU is advised

Also reported: the share of rows whose tokens are identical between the two (fp32: expected 100%).
Prints a Markdown report (``--results FILE`` also appends it).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from markdown_results import publish  # noqa: E402  (benchmarks/, beside this script)

from latent_verbalizer.components.caption.caption import auto_decode_batch  # noqa: E402
from latent_verbalizer.components.caption.decoder_factory import make_decoder  # noqa: E402
from latent_verbalizer.components.caption.greedy import GreedySettings  # noqa: E402
from latent_verbalizer.components.common.model_families import load_model  # noqa: E402
from latent_verbalizer.components.common.precision import exact_float32_math  # noqa: E402
from latent_verbalizer.components.common.random_weights import init_random_weights  # noqa: E402

TINY = {"blip": "tiny-random-blip", "vit-gpt2": "tiny-random-vit-gpt2", "llava": "tiny-random-llava"}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def base_size(family: str, tiny):
    """A random model of base size with the tiny one's tokenizer and processors (same classes)."""
    from transformers import (
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

    old = tiny.model.config
    if family == "blip":  # BLIP-base: ViT-B/16 at 384 px, a 12-layer BERT decoder
        t = old.text_config
        config = BlipConfig(text_config=dict(vocab_size=t.vocab_size, bos_token_id=t.bos_token_id, sep_token_id=t.sep_token_id,
                                             pad_token_id=t.pad_token_id, eos_token_id=t.eos_token_id),
                            vision_config=dict(image_size=384, patch_size=16))
        net = BlipForConditionalGeneration(config)
    elif family == "vit-gpt2":  # nlpconnect/vit-gpt2-image-captioning's shapes: ViT-B/16 at 224 px + GPT-2 (124M)
        d = old.decoder
        config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(
            ViTConfig(), GPT2Config(vocab_size=d.vocab_size, bos_token_id=d.bos_token_id, eos_token_id=d.eos_token_id,
                                    add_cross_attention=True, is_decoder=True))
        config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = (
            old.decoder_start_token_id, old.pad_token_id, old.eos_token_id)
        net = VisionEncoderDecoderModel(config)
    else:  # llava-1.5's vision tower (CLIP ViT-L/14 at 336 px: 576 image tokens) with a 1B Llama
        t = old.text_config
        config = LlavaConfig(
            vision_config=CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                           num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768),
            text_config=LlamaConfig(vocab_size=t.vocab_size, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                                    num_attention_heads=16, num_key_value_heads=16, bos_token_id=t.bos_token_id,
                                    eos_token_id=t.eos_token_id, pad_token_id=t.pad_token_id, max_position_embeddings=2048),
            image_token_id=old.image_token_id, vision_feature_layer=-2, vision_feature_select_strategy="default")
        net = LlavaForConditionalGeneration(config)
        tiny.processor.patch_size = 14
        tiny.processor.image_processor.size = {"shortest_edge": 336}
        tiny.processor.image_processor.crop_size = {"height": 336, "width": 336}
    init_random_weights(net)
    tiny.model = net.eval()
    return tiny


def naive_generate(loaded, family: str, decoder, pixels, layer: int, block, settings: GreedySettings):
    """The model's own generate for one layer's rows; returns token lists (start/prompt left out)."""
    common = dict(do_sample=False, num_beams=1, forced_eos_token_id=settings.eos_token_id, eos_token_id=settings.eos_token_id,
                  pad_token_id=settings.eos_token_id)
    model = loaded.model
    with torch.no_grad():
        if family == "blip":
            states = decoder.image_embeddings(block)
            start = torch.full((states.shape[0], 1), settings.sot_token_id, device=states.device)
            out = model.text_decoder.generate(input_ids=start, encoder_hidden_states=states, max_length=settings.seq_len,
                                              min_length=settings.min_seq_len, **common)
            return [r[1:].tolist() for r in out]
        if family == "vit-gpt2":
            from transformers.modeling_outputs import BaseModelOutput

            normed = model.encoder.layernorm(block.to(decoder.dtype))
            out = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=normed), max_length=settings.seq_len,
                                 min_length=settings.min_seq_len, **common)
            return [r[1:].tolist() for r in out]
        prompt = torch.tensor([decoder.prompt_ids] * pixels.shape[0], device=pixels.device)
        out = model.generate(input_ids=prompt, pixel_values=pixels, vision_feature_layer=layer + 1,
                             max_new_tokens=settings.seq_len - 1, min_new_tokens=settings.min_seq_len - 1, **common)
        return [r[prompt.shape[1]:].tolist() for r in out]


def cut_at_end(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


def bench_family(family: str, size: str, device: str, n_images: int, precision: str) -> dict:
    loaded = load_model(TINY[family])
    if size == "base":
        loaded = base_size(family, loaded)
    loaded.model.to(device)
    settings = GreedySettings(seq_len=30, min_seq_len=5)
    decoder = make_decoder(loaded, precision, settings).to(device)
    settings = decoder.settings  # the family's start and end tokens
    g = torch.Generator().manual_seed(0)
    side = loaded.image_size
    pixels = torch.randn(n_images, 3, side, side, generator=g).to(device)
    if family == "llava" and size == "base":
        decoder.prompt_ids = loaded.prompt_ids()
        decoder.image_positions = [i for i, t in enumerate(decoder.prompt_ids) if t == loaded.image_token_id]
    layers = list(range(loaded.n_layers))
    with torch.no_grad():
        blocks = loaded.vision_block_outputs(pixels.to(next(loaded.vision_tower().parameters()).dtype), layers)
    inputs = torch.cat([decoder.image_embeddings(b) for b in blocks])
    batch = auto_decode_batch(decoder, inputs.shape[1], device) if device.startswith("cuda") else 64

    def ours():
        tokens = []
        for start in range(0, len(inputs), batch):
            tokens += decoder.generate(inputs[start:start + batch]).token_ids
        return tokens

    ours()  # warm-up
    sync(device)
    t0 = time.perf_counter()
    our_tokens = ours()
    sync(device)
    our_s = time.perf_counter() - t0

    naive_tokens = []
    t0 = time.perf_counter()
    for layer, block in zip(layers, blocks):
        naive_tokens += naive_generate(loaded, family, decoder, pixels, layer, block, settings)
    sync(device)
    naive_s = time.perf_counter() - t0
    same = sum(cut_at_end(a, settings.eos_token_id) == cut_at_end(b, settings.eos_token_id)
               for a, b in zip(our_tokens, naive_tokens))
    rows = len(our_tokens)
    return {"family": family, "size": size, "layers": len(layers), "rows": rows, "batch": batch,
            "image_tokens": inputs.shape[1], "ours": rows / our_s, "naive": rows / naive_s,
            "identical": 100.0 * same / rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=("tiny", "base"), default="tiny")
    ap.add_argument("--families", default="blip,vit-gpt2,llava")
    ap.add_argument("--images", type=int, default=None, help="images (default: tiny 16, base 8 on CPU / 64 on GPU)")
    ap.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--cpu", action="store_true", help="stay on the CPU even when a GPU is there")
    ap.add_argument("--results", default=None, help="append the Markdown report to this file")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    n_images = args.images or (16 if args.size == "tiny" else 64 if device == "cuda" else 8)
    tf32 = exact_float32_math()["tf32"] if args.precision == "float32" else None
    torch.manual_seed(0)
    machine = torch.cuda.get_device_name(0) if device == "cuda" else f"{platform.processor() or platform.machine()}, " \
        f"{torch.get_num_threads()} threads"
    lines = [f"### Model families: our cached path vs the model's own generate per layer ({args.size}, {device})", "",
             f"Machine: {machine}; torch {torch.__version__}; precision {args.precision}"
             + (f" (TF32 {'on' if tf32 else 'off'})" if tf32 is not None else "") + f"; {n_images} images, seq_len 30, "
             "min_seq_len 5, greedy.", "",
             "| family | size | layers | rows | image tokens | batch | ours captions/s | own generate per layer captions/s | "
             "ratio | identical tokens |", "|---|---|---|---|---|---|---|---|---|---|"]
    for family in args.families.split(","):
        r = bench_family(family, args.size, device, n_images, args.precision)
        lines.append(f"| {r['family']} | {r['size']} | {r['layers']} | {r['rows']} | {r['image_tokens']} | {r['batch']} | "
                     f"{r['ours']:.3g} | {r['naive']:.3g} | {r['ours'] / r['naive']:.2f}x | {r['identical']:.1f}% |")
        print(lines[-1], flush=True)
    report = "\n".join(lines) + "\n"
    publish(report, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
