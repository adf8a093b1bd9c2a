"""``lverb report``: tables in, a self-contained HTML report, plots, summary and metrics out."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="HTML report, plots and metrics from the captions and labels tables",
        description="Build the report: one self-contained HTML page (category share per layer, entropy, "
                    "distance to the final caption, an image browser, provenance), plots as PNG and SVG, "
                    "summary.md and metrics.json, all under --out.",
    )
    parser.add_argument("--captions", nargs="+", required=True, metavar="URI",
                        help="captions Parquet files (or a folder/prefix, or a brace/glob pattern)")
    parser.add_argument("--labels", required=True, metavar="URI", help="the labels Parquet of the categorize step")
    parser.add_argument("--aggregate", required=True, metavar="URI",
                        help="the per-layer aggregate Parquet the same categorize run wrote (its metadata holds the "
                             "label-to-category map)")
    parser.add_argument("--out", required=True, metavar="DIR|URI", help="folder or s3:// prefix to write the report to")
    parser.add_argument("--images", metavar="PATTERN",
                        help="webdataset shard pattern of the input images: thumbnails, and reference captions "
                             "(json 'captions') for BLEU/CIDEr")
    parser.add_argument("--close-f1", type=float, default=0.5,
                        help="token F1 to the last layer's caption from which a caption counts as close (default 0.5)")
    parser.add_argument("--min-share", type=float, default=5.0,
                        help="chart: categories below this percent in every layer are drawn as one 'other' area")
    parser.add_argument("--thumbnail-px", type=int, default=96, help="thumbnail size (longest side, pixels)")
    parser.add_argument("--max-thumbnails", type=int, default=None, help="embed at most this many thumbnails")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .report import build_report

    if not 0 < args.close_f1 <= 1:
        raise ValueError(f"--close-f1 {args.close_f1}: must be in (0, 1]")
    if args.thumbnail_px < 16:
        raise ValueError(f"--thumbnail-px {args.thumbnail_px}: use at least 16")
    result = build_report(
        args.captions, args.labels, args.aggregate, args.out, args.images,
        close_f1=args.close_f1, min_share_percent=args.min_share,
        thumbnail_px=args.thumbnail_px, max_thumbnails=args.max_thumbnails,
    )
    print(result.markdown)
    print(json.dumps({"files": result.files}, indent=1))
    return 0
