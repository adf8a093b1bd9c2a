"""``lverb shards`` and ``lverb extract``."""

from __future__ import annotations

import argparse
import sys

from ..common import storage
from ..common.precision import dtype_argument
from ..common.random_weights import random_weights_warning


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shards", help="pack a folder of images (or a Karpathy split of MSCOCO) into webdataset shards",
                       description="Pack images into webdataset shards (locally or on S3), image bytes unchanged.")
    p.add_argument("src", help="folder of images (with --karpathy: the MSCOCO image root)")
    p.add_argument("out", help="output folder or s3:// prefix")
    p.add_argument("--per-shard", type=int, default=1000, help="samples per shard (default 1000)")
    p.add_argument("--karpathy", metavar="dataset_coco.json", help="Karpathy split file; reference captions go into each sample's json")
    p.add_argument("--split", default="test", help="split of the Karpathy file (default test)")
    p.set_defaults(func=_shards)

    e = sub.add_parser("extract", help="every selected layer's features of every image, per shard, to storage",
                       description="Stream webdataset shards in, write each selected vision block's output tokens "
                                   "as safetensors chunks + a manifest per shard.")
    e.add_argument("--shards", required=True, help="shard pattern: local or s3:// / minio://, braces and globs, e.g. s3://b/coco-{000..004}.tar")
    e.add_argument("--out", required=True, help="folder or s3:// prefix for the features")
    add_model_arguments(e)
    e.add_argument("--layers", default="all", help="'all' or block indices, e.g. 0,5,23 (0-based)")
    e.add_argument("--dtype", default="float16", type=dtype_argument(),
                   help="stored feature dtype: float16 (default), bfloat16 or float32 (fp16/bf16/fp32 accepted)")
    e.add_argument("--batch-size", default="auto", help="images per batch and chunk, or 'auto' (from free GPU memory)")
    e.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto")
    e.add_argument("--writers", type=int, default=2, help="chunks written to storage concurrently")
    e.set_defaults(func=_extract)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--model and --pretrained, shared by every command that loads a model."""
    from ..common.model_families import MODEL_HELP, PRETRAINED_HELP, STUDY_MODEL

    p.add_argument("--model", default=STUDY_MODEL, help=MODEL_HELP)
    p.add_argument("--pretrained", default=None, help=PRETRAINED_HELP)


def _shards(args) -> int:
    from .shards import write_shards

    uris = write_shards(args.src, args.out, per_shard=args.per_shard, karpathy=args.karpathy, split=args.split)
    print(f"wrote {len(uris)} shards: {uris[0]}" + (f" .. {uris[-1]}" if len(uris) > 1 else ""))
    return 0


def _extract(args) -> int:
    from .extract import ExtractSettings, run_extract

    shards = storage.expand_pattern(args.shards)
    if not shards:
        raise FileNotFoundError(f"--shards {args.shards!r} matches no shard; check the pattern (braces like {{000..004}} and globs work)")
    settings = ExtractSettings(model=args.model, pretrained=args.pretrained, layers=args.layers, dtype=args.dtype,
                               batch_size=args.batch_size, device=args.device, writers=args.writers)
    warning = random_weights_warning(args.model, args.pretrained)
    if warning:
        print(warning)
    result = run_extract(shards, args.out, settings)
    for uri, m in result.manifests.items():
        print(f"{uri}: {m.image_count} images, {len(m.objects)} chunks, {len(m.skipped)} skipped")
    for uri, err in result.failed.items():
        print(f"FAILED {uri}: {err}", file=sys.stderr)
    if warning:
        print(warning)
    return 1 if result.failed else 0
