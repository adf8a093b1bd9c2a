"""Logging set-up for the CLI and the KFP components."""

from __future__ import annotations

import logging

OUR_LOGGERS = ("latent_verbalizer", "lverb")


def configure_logging(verbose: bool = False) -> None:
    """Our own loggers at INFO (DEBUG with ``verbose``); libraries (open_clip logs to the root logger) at WARNING."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for ours in OUR_LOGGERS:
        logging.getLogger(ours).setLevel(logging.DEBUG if verbose else logging.INFO)
