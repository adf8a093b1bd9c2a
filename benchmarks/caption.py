"""Benchmark of the caption step: captions/s of our KV-cached decoder vs the original study's
style (open_clip's loop: fp32, no cache, the whole prefix through the model every step,
batch 256), on random full-size coca_ViT-L-14 weights, in one run.

Both decode a fixed number of steps (29 forwards: EOS is banned until the last step,
which forces it), so random weights cannot shorten the loop. Also reported: bf16 vs
fp32 token agreement (on the normal settings, min_seq_len 5), and peak GPU memory.

    python benchmarks/caption.py              # CUDA GPU, coca_ViT-L-14, bf16 and fp32 vs reference
    python benchmarks/caption.py --small      # CPU smoke run: tiny-random-coca (numbers mean nothing)

Prints a Markdown report (``--results FILE`` also appends it to FILE).
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
from latent_verbalizer.components.caption.coca_decoder import CachedCocaDecoder, GreedySettings  # noqa: E402
from latent_verbalizer.components.common.model_families.coca_loading import (  # noqa: E402
    EOS_TOKEN_ID,
    SOT_TOKEN_ID,
    load_coca,
    vision_block_outputs,
)
from latent_verbalizer.components.common.precision import exact_float32_math  # noqa: E402

FIXED = GreedySettings(seq_len=30, min_seq_len=29)  # 29 decoder forwards for every row


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


@torch.no_grad()
def reference_style(model, image_embs: torch.Tensor, steps: int) -> int:
    """open_clip's CoCa.generate loop, greedy: the whole prefix through text tower + decoder every step."""
    n = image_embs.shape[0]
    out = torch.full((n, 1), SOT_TOKEN_ID, dtype=torch.long, device=image_embs.device)
    latent = torch.zeros(n, 1, device=image_embs.device)
    for step in range(steps):
        logits = model(None, out, image_latent=latent, image_embs=image_embs, output_labels=False)["logits"][:, -1]
        if step < steps - 1:
            logits[:, EOS_TOKEN_ID] = -float("inf")
            nxt = logits.argmax(-1, keepdim=True)
        else:
            nxt = torch.full((n, 1), EOS_TOKEN_ID, device=out.device)
        out = torch.cat([out, nxt], 1)
    return n


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up (allocator, kernels)
    sync()
    t = time.perf_counter()
    result = None
    for _ in range(repeats):
        result = fn()
    sync()
    return (time.perf_counter() - t) / repeats, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="CPU smoke run with tiny-random-coca (numbers mean nothing)")
    ap.add_argument("--rows", type=int, default=None, help="(image, layer) rows for our decoder, decoded in batches "
                    "sized as `lverb caption` sizes them (default 4096, small 64)")
    ap.add_argument("--reference-batch", type=int, default=None, help="reference batch (default 256, small 16)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--cpu", action="store_true", help="full-size model on the CPU (slow; small --rows advised)")
    ap.add_argument("--quick", action="store_true", help="GPU run sized for benchmarks/gpu_check.sh's time budget "
                    "(2048 rows, one timed repeat)")
    ap.add_argument("--results", default=None, help="append the Markdown report to this file")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.repeats = args.rows or 2048, args.repeats or 1

    device = "cpu" if args.small or args.cpu or not torch.cuda.is_available() else "cuda"
    if not (args.small or args.cpu) and device == "cpu":
        sys.exit("no CUDA GPU: run on a GPU machine, or pass --small (or --cpu) for a CPU run")
    rows = args.rows or (64 if args.small else 4096)
    ref_batch = args.reference_batch or (16 if args.small else 256)
    repeats = args.repeats or (1 if args.small else 3)
    loaded = load_coca("tiny-random-coca" if args.small else "coca_ViT-L-14", "random", device="cpu")
    tf32 = exact_float32_math()["tf32"]  # as `lverb caption` does for float32; bf16 is unaffected
    model = loaded.model.to(device).eval()

    # image embeddings from real block outputs of random images, every layer
    torch.manual_seed(0)
    images = torch.randn(max(1, rows // loaded.n_layers + 1), 3, *model.visual.image_size, device=device)
    blocks = vision_block_outputs(model.visual, images, list(range(loaded.n_layers)))
    fp32 = CachedCocaDecoder(model, "fp32", FIXED).to(device)
    embs = torch.cat([fp32.image_embeddings(b) for b in blocks])[:rows].contiguous()
    rows = embs.shape[0]

    what = "smoke, tiny-random-coca" if args.small else "coca_ViT-L-14, random weights"
    report = [f"### caption benchmark ({what}, {device_name(device)})",
              "", f"- device: {device_name(device)}; torch {torch.__version__}",
              f"- fixed length: 29 decoder forwards per caption; ours: {rows} rows, reference batch {ref_batch}; "
              f"TF32 {'on' if tf32 else 'off'} for float32 (both ours and the reference)", "",
              "| decoder | captions/s | speed-up vs reference | peak GPU memory |", "| --- | --- | --- | --- |"]

    def peak_reset():
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()

    def peak() -> str:
        return f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device == "cuda" else "n/a"

    peak_reset()
    ref_s, _ = timed(lambda: reference_style(model, embs[:ref_batch], 29), repeats)
    ref_rate = ref_batch / ref_s
    report.append(f"| reference style: fp32, no cache, batch {ref_batch} | {ref_rate:.1f} | 1.0x | {peak()} |")

    results = {}
    for precision in ("fp32", "bf16"):
        dec = fp32 if precision == "fp32" else CachedCocaDecoder(model, "bf16", FIXED).to(device)
        peak_reset()
        batch = min(rows, auto_decode_batch(dec, embs.shape[1], device))  # what `lverb caption` would use

        def decode_all():
            return [dec.generate(embs[i:i + batch]) for i in range(0, rows, batch)]

        secs, outs = timed(decode_all, repeats)
        steps = sum(len(t) for out in outs for t in out.token_ids) / rows
        rate = rows / secs
        results[precision] = rate
        report.append(f"| ours: KV cache, {precision}, batch {batch} ({steps:.1f} tokens/caption) | {rate:.1f} | "
                      f"{rate / ref_rate:.1f}x | {peak()} |")

    # agreement on the study's own settings (rows may stop early here)
    normal32 = CachedCocaDecoder(model, "fp32").to(device).generate(embs[:1024])
    normal16 = CachedCocaDecoder(model, "bf16").to(device).generate(embs[:1024])
    same_caption = sum(a == b for a, b in zip(normal32.token_ids, normal16.token_ids)) / len(normal32.token_ids)
    pairs = [(x, y) for a, b in zip(normal32.token_ids, normal16.token_ids) for x, y in zip(a, b)]
    same_token = sum(x == y for x, y in pairs) / max(len(pairs), 1)
    report += ["", f"- bf16 vs fp32 (study's settings, {len(normal32.token_ids)} captions): identical captions "
               f"{100 * same_caption:.1f}%, identical tokens at aligned positions {100 * same_token:.1f}% "
               "(random weights give near-uniform distributions, where ties flip most easily)",
               f"- target: bf16 >= 50x the reference style on one H100/H200; measured {results['bf16'] / ref_rate:.1f}x "
               f"(fp32, the exact path: {results['fp32'] / ref_rate:.1f}x)", ""]
    text = "\n".join(report)
    publish(text, args.results)


if __name__ == "__main__":
    main()
