"""``lverb compile``, ``lverb run``, ``lverb submit``: the pipeline's own commands."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Registered once the pipeline lands (issue 5)."""
