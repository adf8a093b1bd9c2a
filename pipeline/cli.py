"""``lverb``: one command, a subcommand per job.

Each component contributes its subcommands through a ``register(subparsers)`` function
in its ``cli`` module; this file only assembles them, so a component's CLI lives next
to its code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pipeline import __version__

# Modules that register subcommands, in the order they appear in ``lverb --help``.
COMMAND_MODULES = (
    "components.extract.cli",     # shards, extract
    "components.caption.cli",     # caption, interpret
    "components.categorize.cli",  # categorize
    "components.report.cli",      # report
    "pipeline.commands",          # compile, run, submit
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lverb",
        description="latent-verbalizer: what each layer of a CoCa vision encoder sees, in words.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def configure_logging(verbose: bool = False) -> None:
    """Our own loggers at INFO; libraries (open_clip logs to the root logger) at WARNING."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for ours in ("components", "pipeline", "lverb"):
        logging.getLogger(ours).setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        # Errors our code raises for bad input carry the input and the fix in their message.
        if args.verbose:
            raise
        print(f"lverb {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
