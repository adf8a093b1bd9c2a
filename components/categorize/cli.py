"""``lverb categorize``: label captions with an instruct LLM (or import the study's raw answers)."""

from __future__ import annotations

import argparse
import json

from .llm.loading import DEFAULT_MODEL


def _cpu_replicas(v: str) -> str | int:
    return _batch_size(v)       # the same spelling: auto or a positive integer


def _batch_size(v: str) -> str | int:
    if v == "auto":
        return v
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r}: use auto or a positive integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{v!r}: use auto or a positive integer")
    return n


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "categorize", help="split every caption into parts and label them with an instruct LLM",
        description="Label every distinct caption with an instruct LLM (grammar-constrained, batched, resumable), "
                    "then write OUT/labels.parquet and the per-layer OUT/aggregate.parquet. The Hugging Face token "
                    "is read from the HF_TOKEN environment variable only.")
    p.add_argument("--captions", nargs="+", required=True, metavar="URI",
                   help="captions Parquet files (local, s3:// or minio://; patterns allowed), or the study's caps JSON")
    p.add_argument("--out", required=True, metavar="URI", help="output folder (local or s3://)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"hub id, local folder, s3:// prefix, smollm2-135m or tiny-random-llama (default {DEFAULT_MODEL})")
    p.add_argument("--labels", default=None, metavar="YAML", help="label list + prompt YAML (default: the study's 58 labels)")
    p.add_argument("--merge", default=None, metavar="YAML", help="label -> category merge table (default: the study's 35 categories)")
    p.add_argument("--gpus", type=int, default=None, help="number of GPUs to use (default: all visible)")
    p.add_argument("--batch-size", type=_batch_size, default="auto", help="auto (from the GPU memory) or N")
    p.add_argument("--dtype", default="auto", help="auto (bfloat16 on GPU, float32 on CPU), bfloat16, float16, float32")
    p.add_argument("--cpu-replicas", type=_cpu_replicas, default="auto", metavar="N|auto",
                   help="without GPUs: replica processes of one thread each (default auto: one per usable core that the work keeps busy)")
    p.add_argument("--answers-per-file", type=int, default=256,
                   help="answers per file of the answer store OUT/answers/ (what a killed run keeps; default 256)")
    p.add_argument("--max-parts", type=int, default=None, metavar="N",
                   help="cap the parts of an answer at N (cheaper; recorded in the labels' metadata). Default: only "
                        "each caption bounds its answer, as in the study")
    p.add_argument("--import-raw", default=None, metavar="DIR",
                   help="instead of running a model, read the study's raw answers (DIR/layer_N.json, in the order "
                        "of each layer's captions in --captions)")
    p.set_defaults(func=main)


def main(args) -> int:
    from .categorize import run_categorize

    summary = run_categorize(args.captions, args.out, model=args.model, labels_uri=args.labels, merge_uri=args.merge,
                             gpus=args.gpus, batch_size=args.batch_size, dtype=args.dtype, import_raw=args.import_raw,
                             answers_per_file=args.answers_per_file, max_parts=args.max_parts,
                             cpu_replicas=args.cpu_replicas)
    brief = {k: summary.get(k) for k in ("captions", "unique_captions", "dedup_saving_percent", "resumed", "to_label",
                                         "status_counts", "labels_uri", "aggregate_uri", "seconds") if k in summary}
    print(json.dumps(brief, indent=1))
    return 0
