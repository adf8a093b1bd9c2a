"""The answer format: a JSON array of ``{"part": str, "labels": [1..max_labels labels]}``.

An array (not an object keyed by part) so that a repeated part survives; the bounds an
answer is held to for a given caption; the JSON schema given to the decoding grammar; the
longest answer it allows (which sizes ``max_new_tokens``); parsing with a ``status``; and
a lenient parser for the original study's raw answers (``{"part": ["l1", "l2", "l3"], ...}``,
duplicate keys kept).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..common.contracts import (  # noqa: F401 -- the status flags are part of the labels contract
    ANSWER_LIMIT,
    LABEL_NOT_IN_LIST,
    NO_PARTS,
    NOT_AGGREGATED,
    PART_NOT_IN_CAPTION,
    STATUS_OK,
    TRUNCATED,
    UNPARSEABLE,
)
from .labelset import LabelSet, Limits, Part, compact_json

# One part: printable ASCII without '"' and '\\' (so no control characters, no escapes:
# xgrammar's maxLength would let control characters through), no leading/trailing space.
_CHAR = r"[ !#-\[\]-~]"
_EDGE = r"[!#-\[\]-~]"

# The rule that maps a caption to its bounds (recorded in the labels table's metadata).
BOUNDS_RULE = ("max_parts = the caption's word count + 1, max_part_chars = its length in characters + 1, each "
               "rounded up to a power of two (one grammar per bucket), then capped by the label file's limits when set")


@dataclass(frozen=True)
class AnswerBounds:
    """What one answer may hold: at most ``max_parts`` parts of at most ``max_part_chars`` characters."""

    max_parts: int
    max_part_chars: int

    @property
    def key(self) -> str:
        return f"parts<={self.max_parts},part_chars<={self.max_part_chars}"


def _power_of_two_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def answer_bounds(caption: str, limits: Limits) -> AnswerBounds:
    """The bounds of a caption's answer. A part is at least one word of the caption, so its
    word count bounds the parts; a part is at most the whole caption, so its length bounds a
    part's characters. One more than each, so that an answer reaching a bound is one the
    grammar stopped (a faithful answer never does); rounded up to powers of two so captions
    share a few grammars."""
    parts = _power_of_two_at_least(len(caption.split()) + 1)
    chars = _power_of_two_at_least(len(caption) + 1)
    return AnswerBounds(min(parts, limits.max_parts or parts), min(chars, limits.max_part_chars or chars))


# xgrammar unrolls a bounded repetition of up to 128 into grammar states, whose token masks it
# precomputes; a longer one stays a counting node whose mask is worked out token by token at
# every step: 36 ms a row for {0,254} with Llama-3's 128k-token vocabulary, against 0.06 ms
# (benchmarks/grammar_mask.py). Longer bounds are written as unrolled pieces, unambiguously:
# fewer than 128 characters, or 128 and then the rest. The same language either way.
UNROLLED_REPEAT = 128


def _chars_up_to(n: int) -> str:
    """A pattern of 0..n ``_CHAR`` in repetitions of at most ``UNROLLED_REPEAT``."""
    if n <= UNROLLED_REPEAT:
        return f"{_CHAR}{{0,{n}}}"
    return f"({_CHAR}{{{UNROLLED_REPEAT}}}{_chars_up_to(n - UNROLLED_REPEAT)}|{_CHAR}{{0,{UNROLLED_REPEAT - 1}}})"


def part_pattern(max_chars: int) -> str:
    """One part of at most ``max_chars`` characters: printable ASCII, no quote or backslash,
    no space at either end."""
    if max_chars == 1:
        return f"^{_EDGE}$"
    return f"^{_EDGE}({_chars_up_to(max_chars - 2)}{_EDGE})?$"


def answer_schema(label_set: LabelSet, bounds: AnswerBounds) -> dict:
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": bounds.max_parts,
        "items": {
            "type": "object",
            "properties": {
                "part": {"type": "string", "pattern": part_pattern(bounds.max_part_chars)},
                "labels": {"type": "array", "minItems": 1, "maxItems": label_set.limits.max_labels, "items": {"enum": list(label_set.labels)}},
            },
            "required": ["part", "labels"],
            "additionalProperties": False,
        },
    }


def max_answer_chars(label_set: LabelSet, bounds: AnswerBounds) -> int:
    """Characters of the longest compact answer the schema allows.

    Every token the grammar can accept carries at least one character (parts are ASCII),
    so this + 1 (the stop token) bounds the new tokens: an answer is never cut.
    """
    n_labels = label_set.limits.max_labels
    longest_label = max(len(x) for x in label_set.labels)
    item = (len('{"part":"') + bounds.max_part_chars + len('","labels":[')
            + n_labels * (longest_label + 2) + (n_labels - 1) + len("]}"))
    return 2 + bounds.max_parts * item + (bounds.max_parts - 1)


def max_new_tokens(label_set: LabelSet, bounds: AnswerBounds) -> int:
    """The schema's bound on new tokens: the longest answer it allows, + 1 for the stop token."""
    return max_answer_chars(label_set, bounds) + 1


# What the study's answers need. Its 12,000 raw Llama-3.1-70B answers (500 captions x 24
# layers, ``reference/llama70b_labels``), those that parse (11,838), re-rendered in this
# format and counted with the Llama-3 tokenizer: at most 396 tokens (p99 218, median 71);
# every one lies under 106 + 10 (w + 1) for its caption's word count w (1..28; the line is
# reached by a 1-word caption of 68 characters, 122 tokens, and a 28-word one, 396), and the
# rule below is that line with 50% margin (336 tokens at 10 words, 624 at 28). The study
# itself cut answers at 1,024 tokens (its 146 cut answers ran away repeating), the cap here. The schema's own bound
# (``max_new_tokens``) is 2,450 for a 10-word caption and 11,042 for a 28-word one: a batch
# decodes until its longest row ends, so one runaway row kept a whole batch decoding that long.
ANSWER_TOKENS_BASE, ANSWER_TOKENS_PER_WORD, ANSWER_TOKENS_CAP = 160, 16, 1024
ANSWER_TOKENS_RULE = (f"new tokens of an answer <= min({ANSWER_TOKENS_BASE} + {ANSWER_TOKENS_PER_WORD} x (the caption's "
                      f"word count + 1), {ANSWER_TOKENS_CAP}, the schema's longest answer + 1); an answer stopped there "
                      "is flagged answer_limit")


def answer_token_bound(caption: str, label_set: LabelSet) -> int:
    """New tokens a caption's answer may take (``ANSWER_TOKENS_RULE``); used both to stop
    its row and to plan the KV cache. A row that reaches it is stopped, the batch goes on."""
    measured = ANSWER_TOKENS_BASE + ANSWER_TOKENS_PER_WORD * (len(caption.split()) + 1)
    return min(measured, ANSWER_TOKENS_CAP, max_new_tokens(label_set, answer_bounds(caption, label_set.limits)))


def limit_reached(parts: list[Part], bounds: AnswerBounds, complete: bool) -> bool:
    """Whether an answer reached a bound of its schema (it might have said more without it)."""
    return (not complete or len(parts) >= bounds.max_parts
            or any(len(p.text) >= bounds.max_part_chars for p in parts))


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
