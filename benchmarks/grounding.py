"""Benchmark of grounding maps (issue #21): what the maps add to captioning, in the same run, on the
same rows. Captioning alone is the caption step's decode (the shared greedy loop, KV cache); with
grounding, each decode batch also gets its maps (one teacher-forced forward and one backward pass
per batch, ``caption.grounding.Grounder``), as ``lverb caption --grounding`` does.

    python benchmarks/grounding.py --small            # CPU: the four tiny-random models (one per family)
    python benchmarks/grounding.py --models coca_ViT-B-32 --rows 48 --cpu   # a real-size CoCa on the CPU
    python benchmarks/grounding.py --quick            # GPU: coca_ViT-L-14 (random weights), sized for gpu_check.sh

Rows are (image, layer) pairs of random images, every layer, decoded with the study's settings
(seq_len 30, min_seq_len 5; random weights mostly run to the length limit). Reported per model:
captions/s alone, captions/s with maps, and the cost ratio (time with maps / time alone).
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
from latent_verbalizer.components.caption.grounding import Grounder, auto_grounding_batch  # noqa: E402
from latent_verbalizer.components.common.model_families import load_model  # noqa: E402
from latent_verbalizer.components.common.precision import exact_float32_math  # noqa: E402

TINY = ("tiny-random-coca", "tiny-random-blip", "tiny-random-vit-gpt2", "tiny-random-llava")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def measure(model: str, rows: int, batch: int | None, repeats: int, device: str, precision: str) -> dict:
    loaded = load_model(model, "random" if not model.startswith("tiny-random") else None)
    decoder = make_decoder(loaded, precision=precision).to(device)
    loaded.vision_tower().to(device)
    grounder = Grounder(decoder)
    side = loaded.image_size
    torch.manual_seed(0)
    images = torch.randn(max(1, -(-rows // loaded.n_layers)), 3, side, side, device=device)
    layers = list(range(loaded.n_layers))
    with torch.no_grad():
        x = torch.cat([grounder.normalised_tokens(b) for b in loaded.vision_block_outputs(images, layers)])[:rows]
    rows = len(x)
    n_image_tokens = grounder.decoder_inputs(x[:1]).shape[1]
    size = min(rows, batch or auto_decode_batch(decoder, n_image_tokens, device))
    grounder.backoff.batch_size = auto_grounding_batch(decoder, n_image_tokens, device, size)  # as lverb caption sizes it

    def captions_alone():
        return [decoder.generate(grounder.decoder_inputs(x[i:i + size])) for i in range(0, rows, size)]

    def with_maps():
        out = []
        for i in range(0, rows, size):
            decoded = decoder.generate(grounder.decoder_inputs(x[i:i + size]))
            out.append(grounder.maps(x[i:i + size], decoded.token_ids))
        return out

    # On the CPU the clock is the process's CPU time, on one thread (main sets it): a machine shared with
    # other work slows the wall clock of one and not the other, and idle threads spinning count as CPU
    # time; the two are interleaved, the best kept.
    clock = time.perf_counter if device.startswith("cuda") else time.process_time

    def timed(fn):
        sync(device)
        start = clock()
        result = fn()
        sync(device)
        return clock() - start, result

    captions_alone(), with_maps()  # warm-up
    alone, both, peaks = float("inf"), float("inf"), [None, None]
    for _ in range(repeats):
        for which, fn in enumerate((captions_alone, with_maps)):
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            seconds, result = timed(fn)
            if device.startswith("cuda"):
                peaks[which] = torch.cuda.max_memory_allocated() / 2**30
            if which == 0:
                alone, decoded = min(alone, seconds), result
            else:
                both = min(both, seconds)
    peak_alone, peak_both = peaks
    tokens = sum(len(t) for out in decoded for t in out.token_ids) / rows
    return {"model": model, "rows": rows, "batch": f"{size}, {grounder.backoff.batch_size}", "tokens": tokens,
            "alone": rows / alone, "both": rows / both, "ratio": both / alone, "grid": grounder.grid,
            "peak": (peak_alone, peak_both)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="CPU run: the four tiny-random models")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU whatever the machine has")
    ap.add_argument("--quick", action="store_true", help="GPU run sized for benchmarks/gpu_check.sh (one timed repeat)")
    ap.add_argument("--models", default=None, help="comma-separated models (default: coca_ViT-L-14; --small: tiny ones)")
    ap.add_argument("--rows", type=int, default=None, help="(image, layer) rows per model (default 1024 GPU, 48 CPU)")
    ap.add_argument("--batch-size", type=int, default=None, help="rows per decode batch (default: as lverb caption sizes it)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--results", default=None, help="append the Markdown report to this file")
    args = ap.parse_args()
    device = "cpu" if args.small or args.cpu or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not (args.small or args.cpu):
        sys.exit("no CUDA GPU: run on a GPU machine, or pass --small (or --cpu) for a CPU run")
    models = args.models.split(",") if args.models else (list(TINY) if args.small else ["coca_ViT-L-14"])
    rows = args.rows or (1024 if device == "cuda" else 48)
    repeats = args.repeats or (1 if args.quick else 3)
    tf32 = exact_float32_math()["tf32"] if args.precision == "float32" else None
    if device == "cpu":
        torch.set_num_threads(1)

    report = [f"### grounding cost ({device_name(device)})", "",
              f"- torch {torch.__version__}; {args.precision}"
              + (f", TF32 {'on' if tf32 else 'off'}" if tf32 is not None else "")
              + f"; random weights; study's decode settings; best of {repeats} interleaved timed repeat(s) after a warm-up"
              + ("; CPU time of the process on one thread, not wall clock" if device == "cpu" else ""), "",
              "| model | rows (decode batch, maps batch) | tokens/caption | patch grid | captions/s alone | captions/s with maps "
              "| cost with maps / alone | peak GPU memory alone / with maps |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model in models:
        m = measure(model, rows, args.batch_size, repeats, device, args.precision)
        peak = " / ".join(f"{p:.1f} GiB" for p in m["peak"]) if m["peak"][0] is not None else "n/a"
        report.append(f"| {model} | {m['rows']} ({m['batch']}) | {m['tokens']:.1f} | {m['grid'][0]}x{m['grid'][1]} | "
                      f"{m['alone']:.1f} | {m['both']:.1f} | {m['ratio']:.2f}x | {peak} |")
        print(report[-1], file=sys.stderr)
    text = "\n".join(report + [""])
    publish(text, args.results)


if __name__ == "__main__":
    main()
