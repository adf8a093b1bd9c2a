"""``lverb``: one command, a subcommand per job.

Each component contributes its subcommands through a ``register(subparsers)`` function
in its ``cli`` module; this file only assembles them, so a component's CLI lives next
to its code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..components.common.logs import configure_logging
from ..components.common.version import __version__

# Modules that register subcommands, in the order they appear in ``lverb --help``.
COMMAND_MODULES = (
    "latent_verbalizer.components.extract.cli",     # shards, extract
    "latent_verbalizer.components.caption.cli",     # caption, interpret
    "latent_verbalizer.components.categorize.cli",  # categorize
    "latent_verbalizer.components.report.cli",      # report
    "latent_verbalizer.pipeline.commands",           # compile, run, submit
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
