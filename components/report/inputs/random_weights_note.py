"""The header line of a report made from random weights (a shipped tiny-random model, or
``pretrained: random``), read from the captions' provenance."""

from __future__ import annotations

from ...common.random_weights import random_weights_warning


def _made_by(meta: dict) -> tuple[str | None, str | None]:
    params = meta.get("parameters") if isinstance(meta.get("parameters"), dict) else {}
    return meta.get("model") or params.get("model"), meta.get("pretrained") or params.get("pretrained")


def random_weights_note(captions_meta: list[dict]) -> str | None:
    """One line when any captions file was made by random weights, else None."""
    notes = dict.fromkeys(w for w in (random_weights_warning(*_made_by(m)) for m in captions_meta) if w)
    return "; ".join(notes) or None
