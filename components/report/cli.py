"""``lverb report``: tables in, a self-contained HTML report, plots, summary and metrics out;
or, with ``--compare RUN_A RUN_B``, two finished runs compared in one report."""

from __future__ import annotations

import argparse
import json

from .page.browser_sample import BROWSER_IMAGES


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="HTML report, plots and metrics from the captions and labels tables (or two runs compared)",
        description="Build the report: one self-contained HTML page (category share per layer, entropy, "
                    "distance to the final caption, an image browser, provenance), plots as PNG and SVG, "
                    "summary.md and metrics.json, all under --out. With --compare RUN_A RUN_B: two finished "
                    "runs (their storage prefixes) compared on relative depth in one page.",
    )
    parser.add_argument("--captions", nargs="+", metavar="URI",
                        help="captions Parquet files (or a folder/prefix, or a brace/glob pattern)")
    parser.add_argument("--labels", metavar="URI", help="the labels Parquet of the categorize step")
    parser.add_argument("--aggregate", metavar="URI",
                        help="the per-layer aggregate Parquet the same categorize run wrote (its metadata holds the "
                             "label-to-category map)")
    parser.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                        help="compare two finished runs instead: each a run's storage prefix (folder or s3://, "
                             "holding captions/ and labels/; a local run's runs/<timestamp> folder also works)")
    parser.add_argument("--compare-with", metavar="RUN",
                        help="with --captions/--labels/--aggregate: the page also compares this run with RUN "
                             "(a finished run's storage prefix)")
    parser.add_argument("--names", nargs=2, metavar=("A", "B"),
                        help="display names of the two runs (default: their models' names)")
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
    parser.add_argument("--browser-images", type=int, default=BROWSER_IMAGES, metavar="N",
                        help=f"the image browser embeds at most N images (default {BROWSER_IMAGES:,}); a larger run's "
                             "page holds a fixed sample and says so, and image_captions.parquet beside it every image")
    parser.set_defaults(func=run)


def check_arguments(args: argparse.Namespace) -> None:
    """One of the two forms, with the options that belong to it."""
    if args.compare:
        given = [f"--{name}" for name in ("captions", "labels", "aggregate") if getattr(args, name)]
        if given or args.compare_with:
            raise ValueError(f"--compare RUN_A RUN_B reads each run's tables from its storage prefix: drop "
                             f"{', '.join(given + (['--compare-with'] if args.compare_with else []))}")
    else:
        if not args.captions:
            raise ValueError("pass --captions (with --labels and --aggregate) for a run's report, or "
                             "--compare RUN_A RUN_B for two runs compared")
        if args.names and not args.compare_with:
            raise ValueError("--names names the two runs of a comparison: use it with --compare or --compare-with")
    if not 0 < args.close_f1 <= 1:
        raise ValueError(f"--close-f1 {args.close_f1}: must be in (0, 1]")
    if args.browser_images < 1:
        raise ValueError(f"--browser-images {args.browser_images}: use at least 1")
    if args.thumbnail_px < 16:
        raise ValueError(f"--thumbnail-px {args.thumbnail_px}: use at least 16")


def run(args: argparse.Namespace) -> int:
    from .compare.report import build_compare_report
    from .single.report import build_report

    check_arguments(args)
    names = tuple(args.names) if args.names else None
    if args.compare:
        result = build_compare_report(
            args.compare[0], args.compare[1], args.out, args.images, names=names,
            min_share_percent=args.min_share, thumbnail_px=args.thumbnail_px, max_thumbnails=args.max_thumbnails,
            browser_images=args.browser_images,
        )
    else:
        if not args.labels or not args.aggregate:
            raise ValueError("--labels and --aggregate: both are needed (the categorize step writes them side by side)")
        result = build_report(
            args.captions, args.labels, args.aggregate, args.out, args.images,
            close_f1=args.close_f1, min_share_percent=args.min_share,
            thumbnail_px=args.thumbnail_px, max_thumbnails=args.max_thumbnails,
            compare_with=args.compare_with, names=names, browser_images=args.browser_images,
        )
    print(result.markdown)
    print(json.dumps({"files": result.files}, indent=1))
    return 0
