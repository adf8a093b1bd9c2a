"""``lverb caption`` and ``lverb interpret``."""

from __future__ import annotations

import argparse
import sys

from ..common.precision import dtype_argument
from ..common.random_weights import random_weights_warning

GROUNDING_HELP = ("also each caption's grounding map: where in the image it looks, one weight per image patch "
                  "(gradient x input after the first normalisation of the decoder's input; costs a backward pass)")


def register(sub: argparse._SubParsersAction) -> None:
    from ..common.model_families import MODEL_HELP, PRETRAINED_HELP, STUDY_MODEL

    c = sub.add_parser("caption", help="a caption for every (image, layer) of extracted features",
                       description="Decode a caption per (image, layer) from extracted features with the model's own "
                                   "text decoder (greedy, KV-cached), one Parquet file per shard.")
    c.add_argument("--features", required=True, help="features folder/prefix written by extract (or one shard's folder)")
    c.add_argument("--out", required=True, help="folder or s3:// prefix for the captions")
    c.add_argument("--layers", default="all", help="'all' (every extracted layer) or block indices, e.g. 0,5,23")
    add_decode_arguments(c)
    c.add_argument("--batch-size", default="auto", help="(image, layer) rows decoded together, or 'auto' (from free GPU memory)")
    c.add_argument("--pretrained", default=None, help="the features' model weights at another location (local path, s3://)")
    c.add_argument("--grounding", action="store_true", help=GROUNDING_HELP + "; written as the table's 'grounding' column")
    c.set_defaults(func=_caption)

    i = sub.add_parser("interpret", help="print every layer's caption of a few images (no pipeline, no S3)",
                       description="One image in, a table of every layer's caption and entropy out.")
    i.add_argument("images", nargs="+", metavar="IMAGE")
    i.add_argument("--model", default=STUDY_MODEL, help=MODEL_HELP)
    i.add_argument("--pretrained", default=None, help=PRETRAINED_HELP)
    i.add_argument("--layers", default="all", help="'all' or block indices")
    add_decode_arguments(i)
    i.add_argument("--json", action="store_true", help="one JSON object per line per (image, layer)")
    i.add_argument("--grounding", action="store_true",
                   help=GROUNDING_HELP + "; with --json in each line, else one PNG per (image, layer) in --grounding-dir")
    i.add_argument("--grounding-dir", default="grounding", help="folder for the grounding PNGs (default: ./grounding)")
    i.set_defaults(func=_interpret)


def add_decode_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default="float32", type=dtype_argument(("float32", "bfloat16"), "--precision"),
                   help="float32 (default): token-for-token the study's loop; bfloat16: faster, opt-in "
                        "(a near-tie between two tokens can resolve differently); fp32/bf16 accepted")
    p.add_argument("--seq-len", type=int, default=30, help="tokens at most, including the start token (study: 30)")
    p.add_argument("--min-seq-len", type=int, default=5, help="EOS banned while shorter than this (study: 5)")
    p.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto")


def _caption(args) -> int:
    from .caption import CaptionSettings, run_caption

    settings = CaptionSettings(layers=args.layers, precision=args.precision, batch_size=args.batch_size,
                               seq_len=args.seq_len, min_seq_len=args.min_seq_len, device=args.device,
                               pretrained=args.pretrained, grounding=args.grounding)
    warnings = set()
    for m in run_caption(args.features, args.out, settings):
        print(f"{m['shard']}: {m['rows']} captions of {m['images']} images")
        made_by = m.get("parameters") or {}
        warnings.add(random_weights_warning(made_by.get("model"), made_by.get("pretrained")))
    for warning in sorted(w for w in warnings if w):
        print(warning)
    return 0


def _interpret(args) -> int:
    from .coca_decoder import GreedySettings
    from .interpret import interpret_images, print_json, print_table, write_grounding_pngs

    rows = interpret_images(args.images, model=args.model, pretrained=args.pretrained, precision=args.precision,
                            device=args.device, layers=args.layers,
                            settings=GreedySettings(seq_len=args.seq_len, min_seq_len=args.min_seq_len),
                            grounding=args.grounding)
    warning = random_weights_warning(args.model, args.pretrained)
    if warning:  # with --json, stdout stays one JSON object per line
        print(warning, file=sys.stderr if args.json else sys.stdout)
    (print_json if args.json else print_table)(rows)
    if args.grounding and not args.json:
        paths = write_grounding_pngs(rows, args.grounding_dir)
        print(f"\ngrounding maps: {len(paths)} PNGs in {args.grounding_dir}")
    return 0
