"""The label list, answer limits and few-shot prompt: data shipped as YAML in ``data/``
(or a user's own file), loaded and checked here. The merge table is ``merge_table.py``'s."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace

import yaml

from ..common import storage

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
DEFAULT_LABELS = os.path.join(DATA_DIR, "labels.yaml")


@dataclass(frozen=True)
class Part:
    text: str
    labels: tuple[str, ...]

    def to_json(self) -> dict:
        return {"part": self.text, "labels": list(self.labels)}


@dataclass(frozen=True)
class Example:
    caption: str
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class Limits:
    """Answer limits. ``max_parts``/``max_part_chars`` unset (the default): only the caption
    bounds them (a part is at least one word of it, and at most all of it); set, they are
    an explicit cap below that, recorded with the answers' schema."""
    max_parts: int | None = None
    max_part_chars: int | None = None
    max_labels: int = 3


@dataclass
class LabelSet:
    labels: list[str]
    limits: Limits
    system: str
    user: str
    examples: list[Example] = field(default_factory=list)
    source: str = ""
    raw_text: str = ""

    @property
    def fingerprint(self) -> str:
        """Identifies the labels + prompt + limits (stored answers are only reused under the same one)."""
        return hashlib.sha256(f"{self.raw_text}|{self.limits}".encode()).hexdigest()[:12]

    def system_text(self) -> str:
        return self.system.format(labels=", ".join(self.labels))

    def user_text(self, caption: str) -> str:
        return self.user.format(caption=caption)


def read_yaml(uri: str) -> tuple[dict, str]:
    if not storage.is_s3(uri) and not os.path.exists(storage.local_path(uri)):
        raise FileNotFoundError(f"labels file {uri!r} does not exist: pass an existing YAML file (default: {DEFAULT_LABELS})")
    text = storage.read_bytes(uri).decode("utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{uri}: expected a YAML mapping")
    return data, text


def load_labelset(uri: str | None = None, max_parts: int | None = None) -> LabelSet:
    """Load and validate a labels YAML (default: the study's 58 labels and our prompt).
    ``max_parts``: a cap on the parts of an answer instead of the file's (e.g. the demo's;
    recorded with the answers' schema, never a silent change of the method).

    Checks: labels unique, non-empty, JSON-safe; the prompt has ``{labels}``/``{caption}``;
    every example part is a substring of its caption, uses 1..max_labels listed labels, and
    the example fits the limits (the examples must show exactly what answers may be).
    """
    uri = uri or DEFAULT_LABELS
    data, text = read_yaml(uri)
    where = f"labels file {uri}"
    labels = [str(x) for x in data.get("labels") or []]
    if not labels:
        raise ValueError(f"{where}: no `labels:` list")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{where}: duplicate labels {sorted({x for x in labels if labels.count(x) > 1})}")
    bad = [x for x in labels if not x.strip() or '"' in x or "\\" in x or not x.isascii()]
    if bad:
        raise ValueError(f"{where}: labels must be non-empty printable ASCII without quotes or backslashes: {bad}")
    unknown = sorted(set(data.get("limits") or {}) - {"max_parts", "max_part_chars", "max_labels"})
    if unknown:
        raise ValueError(f"{where}: unknown limits {unknown} (known: max_parts, max_part_chars, max_labels)")
    limits = Limits(**(data.get("limits") or {}))
    if max_parts:
        limits = replace(limits, max_parts=int(max_parts))
    if any(v is not None and (not isinstance(v, int) or v < 1) for v in (limits.max_parts, limits.max_part_chars, limits.max_labels)):
        raise ValueError(f"{where}: limits must be integers >= 1 (or unset): {limits}")
    prompt = data.get("prompt") or {}
    system, user = prompt.get("system"), prompt.get("user", "{caption}")
    if not system or "{labels}" not in system or "{caption}" not in user:
        raise ValueError(f"{where}: prompt.system must contain {{labels}} and prompt.user must contain {{caption}}")
    examples = []
    for i, ex in enumerate(data.get("examples") or []):
        cap = str(ex["caption"])
        parts = tuple(Part(str(p["part"]), tuple(str(x) for x in p["labels"])) for p in ex["parts"])
        errs = []
        if not 1 <= len(parts) <= (limits.max_parts or len(parts)):
            errs.append(f"{len(parts)} parts (limit {limits.max_parts})")
        for p in parts:
            if p.text not in cap:
                errs.append(f"part {p.text!r} is not in the caption")
            if limits.max_part_chars and len(p.text) > limits.max_part_chars:
                errs.append(f"part {p.text!r} longer than {limits.max_part_chars}")
            if not 1 <= len(p.labels) <= limits.max_labels:
                errs.append(f"part {p.text!r} has {len(p.labels)} labels")
            errs += [f"label {x!r} not in the list" for x in p.labels if x not in labels]
        if errs:
            raise ValueError(f"{where}: example {i} ({cap!r}): " + "; ".join(errs))
        examples.append(Example(cap, parts))
    return LabelSet(labels, limits, system, user, examples, source=uri, raw_text=text)


def compact_json(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
