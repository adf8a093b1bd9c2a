"""Where the demo's labelling time goes, on CPU: SmolLM2-135M-Instruct (offline) labelling
the captions of the demo's sample images (tiny-random-coca: long gibberish captions).

Measured in one run, so the ratios hold on a machine others are loading too:
- loading: the GGUF file (de-quantize + tokenizer from its vocabulary) against the
  converted folder in the cache (what a run after the first loads);
- one decoding step (batch 4 and 16, prompt prefix in the KV cache) with 2 intra-op
  threads against 1 (CPU_DECODE_THREADS);
- decoding steps into transformers' DynamicCache (the reference: it concatenates the whole
  cache at every step) against the generator's in-place ``growing_cache``, same tokens;
- the whole labelling step (``run_categorize``, the demo's cap) in one CPU replica process
  against one per core (``--cpu-replicas auto``, the default);
- labelling N captions with each caption bounding its answer (the study's method) against
  the demo's cap of 6 parts: new tokens per answer, seconds per step, grammar mask per
  step, captions per second.

    python benchmarks/demo_labelling.py --captions 'runs/X/data/captions/*/captions.parquet'
    python benchmarks/demo_labelling.py            # makes the demo's captions first (~1 min)

Prints a Markdown section (``--results FILE`` appends it there).
"""

from __future__ import annotations

import argparse
import copy
import glob
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from markdown_results import publish  # noqa: E402  (benchmarks/, beside this script)

from latent_verbalizer.components.categorize.answer_store import AnswerStore  # noqa: E402
from latent_verbalizer.components.categorize.categorize import run_categorize  # noqa: E402
from latent_verbalizer.components.categorize.labelset import load_labelset  # noqa: E402
from latent_verbalizer.components.categorize.llm.gguf_conversion import smollm2_folder  # noqa: E402
from latent_verbalizer.components.categorize.llm.growing_cache import growing_cache  # noqa: E402
from latent_verbalizer.components.categorize.llm.loading import load_llm  # noqa: E402
from latent_verbalizer.components.categorize.llm.offline_llms import SMOLLM2  # noqa: E402
from latent_verbalizer.components.categorize.prompt import split_prompt  # noqa: E402
from latent_verbalizer.components.categorize.replicas.replica import label_captions, torch_threads  # noqa: E402
from latent_verbalizer.components.common.contracts import CAPTIONS_SCHEMA
from latent_verbalizer.components.common.tables import read_table

DEMO_MAX_PARTS = 5


def demo_captions(workdir: str) -> list[str]:
    """The demo's captions: sample shards -> tiny-random-coca features -> fp32 captions (CLI steps)."""
    from latent_verbalizer.pipeline.local import make_sample_shards

    pattern = make_sample_shards(os.path.join(workdir, "shards"))
    lverb = [sys.executable, "-m", "latent_verbalizer.pipeline.cli"]
    subprocess.run(lverb + ["extract", "--shards", pattern, "--out", f"{workdir}/features", "--model", "tiny-random-coca", "--device", "cpu",
                            "--batch-size", "16"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(lverb + ["caption", "--features", f"{workdir}/features", "--out", f"{workdir}/captions",
                            "--device", "cpu", "--precision", "fp32"], check=True, stdout=subprocess.DEVNULL)
    return read_captions(f"{workdir}/captions/*/captions.parquet")


def read_captions(pattern: str) -> list[str]:
    files = sorted(glob.glob(pattern))
    if not files:
        sys.exit(f"--captions {pattern!r} matches no file")
    return list(dict.fromkeys(c for f in files for c in read_table(f, CAPTIONS_SCHEMA).column("caption").to_pylist()))


def time_load() -> tuple[float, float]:
    """Seconds to load from the GGUF file (conversion included) and from the converted folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from latent_verbalizer.components.common.offline_models import offline_path

    t0 = time.perf_counter()
    d, f = os.path.split(offline_path(SMOLLM2))
    AutoTokenizer.from_pretrained(d, gguf_file=f)
    AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    gguf_s = time.perf_counter() - t0
    smollm2_folder()                                 # converted once (not timed), if not yet
    t0 = time.perf_counter()
    load_llm(SMOLLM2, torch.float32)
    return gguf_s, time.perf_counter() - t0


@torch.inference_mode()
def time_step(model, prefix_ids: list[int], batch: int, threads: int, steps: int = 6, growing: bool = False) -> float:
    """Median seconds of one decoding step of ``batch`` rows over the cached prompt prefix, in
    transformers' DynamicCache or (``growing``) the generator's in-place cache."""
    with torch_threads(threads):
        start = {"past_key_values": growing_cache(model.config)} if growing else {}
        out = model(input_ids=torch.tensor([prefix_ids]), use_cache=True, logits_to_keep=1, **start)
        cache = copy.deepcopy(out.past_key_values)
        cache.batch_repeat_interleave(batch)
        mask = torch.ones(batch, len(prefix_ids) + 1, dtype=torch.long)
        times = []
        for i in range(steps):
            t0 = time.perf_counter()
            model(input_ids=torch.full((batch, 1), 100), attention_mask=mask, past_key_values=cache, use_cache=True,
                  position_ids=torch.full((batch, 1), len(prefix_ids) + i))
            times.append(time.perf_counter() - t0)
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
    return sorted(times)[len(times) // 2]


def time_labelling(captions: list[str], max_parts: int | None, batch_size: int) -> dict:
    ls = load_labelset(max_parts=max_parts)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        stats = label_captions(captions, SMOLLM2, ls, torch.float32, AnswerStore(out, "bench"), batch_size)
        stats["wall_seconds"] = time.perf_counter() - t0
    stats["seconds_per_step"] = stats["generate_seconds"] / max(stats["decode_steps"], 1)
    stats["mask_ms_per_step"] = 1000 * stats["grammar_mask_seconds"] / max(stats["decode_steps"], 1)
    return stats


def time_replicas(captions_files: list[str], cpu_replicas: int | str) -> tuple[float, int]:
    """(wall seconds, replicas) of the labelling step on ``captions_files``, demo cap."""
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        summary = run_categorize(captions_files, out, model=SMOLLM2, max_parts=DEMO_MAX_PARTS, cpu_replicas=cpu_replicas)
        return time.perf_counter() - t0, summary["layout"]["replicas"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--captions", default=None, help="captions Parquet glob (default: make the demo's captions)")
    ap.add_argument("--study-captions", type=int, default=16,
                    help="captions labelled under the study's bounds (slow: ~20 parts per gibberish caption)")
    ap.add_argument("--batch-size", type=int, default=16, help="as the demo's CPU default")
    ap.add_argument("--results", default=None, help="append the Markdown section to this file")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="lverb-demo-bench-") as work:
        captions = read_captions(args.captions) if args.captions else demo_captions(work)
        files = sorted(glob.glob(args.captions or f"{work}/captions/*/captions.parquet"))
        replicas = {n: time_replicas(files, n) for n in (1, "auto")}
    gguf_s, folder_s = time_load()
    model, tokenizer, _ = load_llm(SMOLLM2, torch.float32)
    prefix = split_prompt(tokenizer, load_labelset()).prefix_ids
    steps = {(b, t): time_step(model, prefix, b, t) for b in (4, 16) for t in (2, 1)}
    cache_steps = {growing: time_step(model, prefix, 16, 1, steps=24, growing=growing) for growing in (False, True)}
    study = time_labelling(captions[: args.study_captions], None, args.batch_size)
    demo_same = time_labelling(captions[: args.study_captions], DEMO_MAX_PARTS, args.batch_size)

    def row(name: str, s: dict) -> str:
        return (f"| {name} | {s['labelled']} | {s['mean_new_tokens']:.1f} | {s['decode_steps']} | "
                f"{s['seconds_per_step']:.3f} | {s['mask_ms_per_step']:.1f} | {s['wall_seconds']:.1f} | "
                f"{s['captions_per_second']:.3f} |")

    lines = [
        "## demo labelling (SmolLM2-135M-Instruct, CPU, fp32)",
        "",
        f"{len(captions)} distinct demo captions (mean {sum(len(c.split()) for c in captions) / len(captions):.1f} words); "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; torch {torch.__version__}",
        "",
        f"load: GGUF file {gguf_s:.1f} s, converted folder {folder_s:.1f} s (**{gguf_s / folder_s:.0f}x**)",
        "",
        "| decoding step (prefix of %d tokens cached) | 2 threads | 1 thread | ratio |" % len(prefix),
        "| --- | ---: | ---: | ---: |",
        *[f"| batch {b} | {steps[(b, 2)]:.3f} s | {steps[(b, 1)]:.3f} s | {steps[(b, 2)] / steps[(b, 1)]:.1f}x |" for b in (4, 16)],
        "",
        "| decoding step, batch 16, 1 thread, 24 steps | DynamicCache (reference) | growing_cache | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| median step | {cache_steps[False]:.3f} s | {cache_steps[True]:.3f} s | {cache_steps[False] / cache_steps[True]:.2f}x |",
        "",
        f"labelling step (run_categorize, {len(captions)} captions, demo cap): one CPU replica {replicas[1][0]:.1f} s, "
        f"auto ({replicas['auto'][1]} replicas) {replicas['auto'][0]:.1f} s: **{replicas[1][0] / replicas['auto'][0]:.2f}x**",
        "",
        "| labelling (1 thread, batch %d) | captions | new tokens / answer | steps | s / step | mask ms / step | seconds | captions/s |"
        % args.batch_size,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        row("study's bounds (caption bounds its answer)", study),
        row(f"demo cap: {DEMO_MAX_PARTS} parts, same captions", demo_same),
        "",
        f"demo cap against the study's bounds, same captions: {study['wall_seconds'] / demo_same['wall_seconds']:.1f}x faster, "
        f"{study['mean_new_tokens'] / max(demo_same['mean_new_tokens'], 1e-9):.1f}x fewer tokens per answer",
        "",
    ]
    text = "\n".join(lines)
    publish(text, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
