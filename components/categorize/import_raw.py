"""``--import-raw DIR``: the original study's raw LLM answers (``layer_N.json``, a JSON list
of answer strings per layer, in the order of that layer's captions) turned into the same
labels and aggregate tables as a new run, so old and new results can be compared."""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict

from ..common import storage
from .answers import TRUNCATED, UNPARSEABLE, parse_raw_answer
from .captions_io import CaptionRow
from .labelset import Part

_LAYER_FILE = re.compile(r"layer_(\d+)\.json$")


def read_raw_answers(dir_uri: str) -> dict[int, list[str]]:
    """``{layer: [answer strings]}`` from a folder (local or S3) of ``layer_N.json`` files."""
    if not storage.is_s3(dir_uri) and not os.path.isdir(storage.local_path(dir_uri)):
        raise FileNotFoundError(f"--import-raw {dir_uri!r} is not a directory: pass the folder holding layer_N.json files")
    uris = [u for u in storage.list_uris(dir_uri) if _LAYER_FILE.search(storage.basename(u))]
    if not uris:
        raise FileNotFoundError(f"--import-raw {dir_uri!r} holds no layer_N.json files (the study's raw answer format)")
    out = {}
    for u in uris:
        answers = storage.read_json(u)
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise ValueError(f"{u}: expected a JSON list of answer strings")
        out[int(_LAYER_FILE.search(storage.basename(u)).group(1))] = answers
    return out


def strict_parse_outcome(text: str, n_parts: int, status: str) -> str:
    """How one raw answer was read, against a strict ``json.loads``: ``strict`` (json.loads
    gives the same parts), ``duplicate_keys`` (json.loads parses it but keeps only the last of
    a repeated part), ``lenient_syntax`` (json.loads fails; trailing commas or escapes
    repaired), ``salvaged_truncated`` (cut off; complete parts kept, not aggregated) or
    ``unparseable``."""
    if status in (TRUNCATED, UNPARSEABLE):
        return "salvaged_truncated" if status == TRUNCATED else "unparseable"
    try:
        strict = json.loads(text)
    except ValueError:
        return "lenient_syntax"
    if isinstance(strict, dict) and len(strict) == n_parts:
        return "strict"
    return "duplicate_keys" if isinstance(strict, dict) else "lenient_syntax"


def pair_answers(rows: list[CaptionRow], answers: dict[int, list[str]], labels: set[str]):
    """Pair the i-th caption of each layer with the i-th answer of that layer's file.

    Returns ``(per_row, first_by_caption, recovery)``: ``(layer, parts, status)`` per caption
    row, for the aggregate; per distinct caption the parts/status of its first occurrence
    (identical captions can have different raw answers), for the labels table; and per layer
    how many answers were read which way (``strict_parse_outcome``), for the metadata.
    """
    by_layer: dict[int, list[CaptionRow]] = defaultdict(list)
    for r in rows:
        by_layer[r.layer].append(r)
    missing = sorted(set(answers) - set(by_layer))
    if missing:
        raise ValueError(f"raw answers for layers {missing} but no captions of those layers: pass the matching --captions")
    per_row: list[tuple[int, list[Part], str]] = []
    first: dict[str, tuple[list[Part], str]] = {}
    recovery: dict[int, dict[str, int]] = {}
    for layer in sorted(answers):
        caps, ans = by_layer[layer], answers[layer]
        if len(caps) != len(ans):
            raise ValueError(f"layer {layer}: {len(caps)} captions but {len(ans)} raw answers: pass the captions the answers were made from")
        outcomes: dict[str, int] = defaultdict(int)
        for row, text in zip(caps, ans):
            parts, status = parse_raw_answer(text, row.caption, labels)
            outcomes[strict_parse_outcome(text, len(parts), status)] += 1
            per_row.append((layer, parts, status))
            first.setdefault(row.caption, (parts, status))
        recovery[layer] = dict(sorted(outcomes.items()))
    return per_row, first, recovery
