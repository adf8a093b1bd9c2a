"""Benchmark of the categorize step: captions/s of our batched, prefix-cached generation vs
the original study's style (one call per caption through the transformers
``text-generation`` pipeline), same random-init model of Llama-3.1-8B shape, same
few-shot prompt, both generating exactly ``--new-tokens`` (96) tokens, in one run.

Also: output tokens per caption (the study's answers re-encoded in our compact format,
and what the constrained random model writes), the dedup saving on the reference
captions, and the grammar constraint's overhead per decoding step.

    python benchmarks/categorize.py                 # CUDA GPU, Llama-3.1-8B shape, bf16
    python benchmarks/categorize.py --small         # CPU smoke run: tiny Llama, fp32

Prints a Markdown report (``--results FILE`` also appends it to FILE).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from markdown_results import publish  # noqa: E402  (benchmarks/, beside this script)

from latent_verbalizer.components.categorize.answers import (  # noqa: E402
    answer_bounds,
    max_new_tokens,
    parse_raw_answer,
    render_answer,
)
from latent_verbalizer.components.categorize.grammar import compile_answer_grammar, stop_token_ids  # noqa: E402
from latent_verbalizer.components.categorize.labelset import load_labelset  # noqa: E402
from latent_verbalizer.components.categorize.llm.generate import Generator  # noqa: E402
from latent_verbalizer.components.categorize.llm.offline_llms import (  # noqa: E402
    llama3_tokenizer,
    llama31_config,
    random_llama,
    tiny_llama_config,
)
from latent_verbalizer.components.categorize.prompt import render, split_prompt  # noqa: E402

# the study's outputs: ../shared/reference beside the checkout, or LVERB_REFERENCE_DIR (gpu_check.sh carries a copy)
REFERENCE = Path(os.environ.get("LVERB_REFERENCE_DIR") or (REPO / ".." / "shared" / "reference")).resolve()


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def load_captions(n: int) -> tuple[list[str], dict]:
    path = REFERENCE / "caps_batch0.json"
    if not path.exists():
        sys.exit(f"reference captions not found at {path}")
    caps = json.loads(path.read_text())
    flat = [c for layer in range(24) for c in caps[f"layer_{layer}"]]
    uniq = len(set(flat))
    per_layer = {layer: len(set(caps[f"layer_{layer}"])) for layer in range(24)}
    dedup = {"captions": len(flat), "unique": uniq, "saving_percent": 100 * (1 - uniq / len(flat)),
             "unique_layer_18": per_layer[18], "min_unique_layer": min(per_layer, key=per_layer.get)}
    # spread over layers so lengths vary like in a real run
    pick = [flat[(i * 997) % len(flat)] for i in range(n)]
    return pick, dedup


def answer_token_stats(tok) -> dict:
    """Tokens per answer: the study's raw answers vs the same answers in our compact format."""
    raw_dir = REFERENCE / "llama70b_labels"
    raw_n, ours_n = [], []
    for layer in range(24):
        for text in json.loads((raw_dir / f"layer_{layer}.json").read_text()):
            raw_n.append(len(tok.encode(text, add_special_tokens=False)))
            parts, status = parse_raw_answer(text)
            if status in ("ok", "label_not_in_list", "part_not_in_caption") and parts:
                ours_n.append(len(tok.encode(render_answer(parts), add_special_tokens=False)) + 1)

    def q(xs, p):
        return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]

    return {"raw_mean": statistics.mean(raw_n), "raw_max": max(raw_n), "ours_mean": statistics.mean(ours_n),
            "ours_p99": q(ours_n, 0.99), "ours_max": max(ours_n)}


def run_ours(gen: Generator, suffixes, batch_size: int) -> float:
    sync()
    t0 = time.perf_counter()
    for _ in gen.generate(suffixes, batch_size):
        pass
    sync()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="CPU smoke run with a tiny Llama (numbers mean nothing)")
    ap.add_argument("--new-tokens", type=int, default=96)
    ap.add_argument("--captions", type=int, default=None, help="captions for our batched run (default 512, small: 16)")
    ap.add_argument("--reference-calls", type=int, default=None, help="one-per-call captions (default 8, small: 2)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 128 (small: 8)")
    ap.add_argument("--constrained-steps", type=int, default=None,
                    help="decoding steps of the constraint-overhead run (default: the answer schema's bound)")
    ap.add_argument("--quick", action="store_true", help="GPU run sized for benchmarks/gpu_check.sh's time budget "
                    "(6 reference calls, constraint overhead over 32 captions x 200 steps)")
    ap.add_argument("--results", default=None, help="append the Markdown report to this file")
    args = ap.parse_args()
    if args.quick:
        args.reference_calls = args.reference_calls or 6
        args.constrained_steps = args.constrained_steps or 200

    cuda = torch.cuda.is_available()
    if not cuda and not args.small:
        sys.exit("no CUDA GPU: this benchmark is meant for one H100/H200; use --small for a CPU smoke run")
    device = "cuda" if cuda and not args.small else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    n_caps = args.captions or (16 if args.small else 512)
    n_ref = args.reference_calls or (2 if args.small else 8)
    bs = args.batch_size or (8 if args.small else 128)

    tok = llama3_tokenizer()
    config = tiny_llama_config(len(tok)) if args.small else llama31_config("8b")
    config.vocab_size = max(config.vocab_size, len(tok))
    t0 = time.perf_counter()
    model = random_llama(config, dtype=dtype, device=device)
    load_s = time.perf_counter() - t0
    ls = load_labelset()
    pp = split_prompt(tok, ls)
    captions, dedup = load_captions(n_caps)
    suffixes = sorted((pp.suffix_ids(tok, c) for c in captions), key=len, reverse=True)   # as the product does
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"

    # ---- ours: batched, prefix KV cache reused, fixed number of unconstrained tokens
    fixed = Generator(model, pp.prefix_ids, None, [], tok.pad_token_id, args.new_tokens)
    run_ours(fixed, suffixes[: min(bs, len(suffixes))], bs)            # warm-up (and the prefix cache)
    fixed.stats.__init__(prefix_tokens=len(pp.prefix_ids))
    ours_s = run_ours(fixed, suffixes, bs)
    ours_rate = len(captions) / ours_s
    step_plain = ours_s / max(fixed.stats.steps, 1)

    # ---- reference style: one call per caption, text-generation pipeline, unconstrained
    from transformers import pipeline

    pipe = pipeline("text-generation", model=model, tokenizer=tok)
    prompts = [render(tok, ls, c) for c in captions[: n_ref + 1]]
    gen_kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                  return_full_text=False, pad_token_id=tok.pad_token_id)
    pipe(prompts[0], **gen_kw)                                          # warm-up
    sync()
    t0 = time.perf_counter()
    for p in prompts[1:]:
        pipe(p, **gen_kw)
    sync()
    ref_s = time.perf_counter() - t0
    ref_rate = n_ref / ref_s

    # ---- constraint overhead: the same batches with the grammar on
    stops = stop_token_ids(tok, model)
    bounds = max((answer_bounds(c, ls.limits) for c in captions), key=lambda b: (b.max_parts, b.max_part_chars))
    grammar = compile_answer_grammar(tok, ls, config.vocab_size, stops, bounds)
    cons = Generator(model, pp.prefix_ids, grammar, stops, tok.pad_token_id,
                    args.constrained_steps or max_new_tokens(ls, bounds))
    cons_caps = suffixes[: min(len(suffixes), 32 if args.quick else bs)]
    cons_s = run_ours(cons, cons_caps, bs)
    mask_ms = 1000 * cons.stats.mask_seconds / max(cons.stats.steps, 1)
    step_cons = cons_s / max(cons.stats.steps, 1)

    toks = answer_token_stats(tok)
    lines = [
        f"## categorize benchmark ({'SMOKE RUN, tiny model on CPU: numbers mean nothing' if args.small else 'Llama-3.1-8B shape, random init, bf16'})",
        "",
        f"device: {gpu}; torch {torch.__version__}; model built in {load_s:.1f}s; prompt prefix {len(pp.prefix_ids)} tokens; "
        f"{args.new_tokens} new tokens per caption for both",
        "",
        "| method | captions | seconds | captions/s |",
        "| --- | ---: | ---: | ---: |",
        f"| reference style: 1 call per caption, text-generation pipeline | {n_ref} | {ref_s:.2f} | {ref_rate:.3f} |",
        f"| ours: batch {bs}, left-padded, length-sorted, prefix KV cache reused | {len(captions)} | {ours_s:.2f} | {ours_rate:.3f} |",
        "",
        f"speed-up: **{ours_rate / ref_rate:.1f}x** (target on an H100/H200: >= 100x)",
        "",
        f"constraint overhead: grammar mask {mask_ms:.2f} ms per decoding step (batch of {len(cons_caps)}); "
        f"step {1000 * step_cons:.1f} ms constrained vs {1000 * step_plain:.1f} ms unconstrained; "
        f"constrained random model wrote {cons.stats.new_tokens / len(cons_caps):.1f} tokens per answer "
        f"(stopped at {cons.max_new_tokens} steps; bound from the schema: {max_new_tokens(ls, bounds)})",
        "",
        f"output tokens per caption (Llama-3 tokenizer), the study's 12,000 answers: raw format mean {toks['raw_mean']:.1f}, "
        f"max {toks['raw_max']}; re-encoded in our compact format (+ stop token) mean {toks['ours_mean']:.1f}, "
        f"p99 {toks['ours_p99']}, max {toks['ours_max']}",
        "",
        f"dedup on the reference captions: {dedup['unique']} distinct of {dedup['captions']} "
        f"({dedup['saving_percent']:.1f}% fewer calls; layer 18: {dedup['unique_layer_18']} distinct of 500)",
    ]
    report = "\n".join(lines) + "\n"
    publish(report, args.results)


if __name__ == "__main__":
    main()
