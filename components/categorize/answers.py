"""The answer format: a JSON array of ``{"part": str, "labels": [1..max_labels labels]}``.

An array (not an object keyed by part) so that a repeated part survives; the JSON schema
given to the decoding grammar; the longest answer it allows (which sizes
``max_new_tokens``); parsing with a ``status``; and a lenient parser for the original
study's raw answers (``{"part": ["l1", "l2", "l3"], ...}``, duplicate keys kept).
"""

from __future__ import annotations

import json
import re

from .labelset import LabelSet, Part, compact_json

# One part: printable ASCII without '"' and '\\' (so no control characters, no escapes:
# xgrammar's maxLength would let control characters through), no leading/trailing space.
_CHAR = r"[ !#-\[\]-~]"
_EDGE = r"[!#-\[\]-~]"

from ..common.contracts import (  # noqa: F401 -- the status flags are part of the labels contract
    LABEL_NOT_IN_LIST,
    NO_PARTS,
    NOT_AGGREGATED,
    PART_NOT_IN_CAPTION,
    STATUS_OK,
    TRUNCATED,
    UNPARSEABLE,
)


def part_pattern(max_chars: int) -> str:
    if max_chars == 1:
        return f"^{_EDGE}$"
    return f"^{_EDGE}({_CHAR}{{0,{max_chars - 2}}}{_EDGE})?$"


def answer_schema(ls: LabelSet) -> dict:
    lim = ls.limits
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": lim.max_parts,
        "items": {
            "type": "object",
            "properties": {
                "part": {"type": "string", "pattern": part_pattern(lim.max_part_chars)},
                "labels": {"type": "array", "minItems": 1, "maxItems": lim.max_labels, "items": {"enum": list(ls.labels)}},
            },
            "required": ["part", "labels"],
            "additionalProperties": False,
        },
    }


def max_answer_chars(ls: LabelSet) -> int:
    """Characters of the longest compact answer the schema allows.

    Every token the grammar can accept carries at least one character (parts are ASCII),
    so this + 1 (the stop token) bounds the new tokens: an answer is never cut.
    """
    lim = ls.limits
    longest_label = max(len(x) for x in ls.labels)
    item = (len('{"part":"') + lim.max_part_chars + len('","labels":[')
            + lim.max_labels * (longest_label + 2) + (lim.max_labels - 1) + len("]}"))
    return 2 + lim.max_parts * item + (lim.max_parts - 1)


def max_new_tokens(ls: LabelSet) -> int:
    return max_answer_chars(ls) + 1


def render_answer(parts) -> str:
    """The compact answer text of parts (used for the few-shot examples too)."""
    return compact_json([p.to_json() if isinstance(p, Part) else p for p in parts])


def check_parts(parts: list[Part], caption: str, labels: set[str] | None) -> str:
    flags = []
    if not parts:
        flags.append(NO_PARTS)
    if any(p.text not in caption for p in parts):
        flags.append(PART_NOT_IN_CAPTION)
    if labels is not None and any(x and x not in labels for p in parts for x in p.labels):   # "" is the study's placeholder
        flags.append(LABEL_NOT_IN_LIST)
    return ";".join(flags) or STATUS_OK


def parse_answer(text: str, caption: str, labels: set[str]) -> tuple[list[Part], str]:
    """Parse one of our answers; status ``ok`` or ``;``-joined flags."""
    try:
        data = json.loads(text)
        parts = [Part(str(d["part"]), tuple(str(x) for x in d["labels"])) for d in data]
    except (ValueError, TypeError, KeyError):
        return [], UNPARSEABLE
    return parts, check_parts(parts, caption, labels)


# ------------------------------------------------------------------ the study's raw answers

_PAIR = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:\s*\[((?:\s*"(?:[^"\\]|\\.)*"\s*,?)*)\s*\]')
_STR = re.compile(r'"((?:[^"\\]|\\.)*)"')
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def _leaf_strings(value) -> list[str]:
    """The string leaves of a raw label value, in order; a nested object (a list of
    ``(key, value)`` pairs from the pairs hook) contributes its values' leaves."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, tuple) and len(value) == 2:
        return _leaf_strings(value[1])
    if isinstance(value, list):
        return [s for v in value for s in _leaf_strings(v)]
    return [] if value is None else [str(value)]


def _raw_labels(values) -> tuple[str, ...]:
    labels = _leaf_strings(values)
    while len(labels) > 1 and labels[-1] == "":       # ["color", "", ""] -> ["color"]
        labels.pop()
    return tuple(labels) or ("",)


def parse_raw_answer(text: str, caption: str | None = None, labels: set[str] | None = None) -> tuple[list[Part], str]:
    """Parse a raw study answer ``{"part": [labels], ...}`` leniently.

    Duplicate keys are kept in order (plain ``json.loads`` keeps only the last); trailing
    commas are tolerated; trailing empty labels are dropped (the first label is kept even
    if empty, as the study's aggregation used it). An answer that is still not valid JSON
    (mostly runaway repetition cut at 1,024 tokens) gets status ``truncated`` with its
    complete ``"part": [...]`` pairs salvaged, or ``unparseable`` when none are found.
    """
    def pairs_hook(pairs):
        return pairs

    data = None
    for candidate in (text, _TRAILING_COMMA.sub(r"\1", text)):
        try:
            data = json.loads(candidate, object_pairs_hook=pairs_hook)
            break
        except ValueError:
            continue
    if isinstance(data, list) and all(isinstance(p, tuple) for p in data):   # a JSON object
        parts = [Part(str(k), _raw_labels(v)) for k, v in data]
        status = check_parts(parts, caption, labels) if caption is not None else (STATUS_OK if parts else NO_PARTS)
        return parts, status
    parts = [Part(_unescape(m.group(1)), _raw_labels([_unescape(s) for s in _STR.findall(m.group(2))]))
             for m in _PAIR.finditer(text)]
    cut = not text.rstrip().endswith("}")
    return parts, (TRUNCATED if parts and cut else UNPARSEABLE)


def _unescape(s: str) -> str:
    try:
        return json.loads(f'"{s}"')
    except ValueError:                      # invalid escapes such as \' in the raw answers
        return s.replace("\\", "")


def first_labels(parts) -> list[str]:
    return [p.labels[0] if p.labels else "" for p in parts]
