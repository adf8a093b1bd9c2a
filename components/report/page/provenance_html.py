"""'How this run was made': the provenance stored in each input table's metadata, as HTML."""

from __future__ import annotations

import json
from html import escape

from .html import definition_list, table

MAX_SKIPPED_SHOWN = 200


def flatten(meta: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in meta.items():
        key = f"{prefix}{k}"
        if k == "skipped":
            continue  # listed on its own
        if isinstance(v, dict) and v and len(v) <= 12:
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, dict)):
            s = json.dumps(v, ensure_ascii=False)
            out[key] = s if len(s) <= 300 else s[:297] + "..."
        else:
            out[key] = str(v)
    return out


def find_skipped(meta) -> list[dict]:
    """Every ``skipped`` list anywhere in a metadata dict (samples a step could not use)."""
    found: list[dict] = []
    if isinstance(meta, dict):
        for k, v in meta.items():
            if k == "skipped" and isinstance(v, list):
                for s in v:
                    found.append(s if isinstance(s, dict) else {"key": str(s), "reason": ""})
            else:
                found.extend(find_skipped(v))
    elif isinstance(meta, list):
        for v in meta:
            found.extend(find_skipped(v))
    return found


def merged(metas: list[dict]) -> list[tuple[str, str]]:
    """One line per key; keys whose value differs between files say so."""
    values: dict[str, list[str]] = {}
    for meta in metas:
        for key, value in flatten(meta).items():
            values.setdefault(key, [])
            if value not in values[key]:
                values[key].append(value)
    lines = []
    for key, distinct in values.items():
        if len(distinct) == 1:
            lines.append((key, distinct[0]))
        else:
            shown = ", ".join(distinct[:5]) + (", ..." if len(distinct) > 5 else "")
            lines.append((key, f"varies between files ({len(distinct)} values): {shown}"))
    return lines


def provenance_html(provenance: dict[str, list[dict]], sources: dict[str, list[str]],
                    counts: list[tuple[str, str]], report_params: list[tuple[str, str]]) -> str:
    parts = ["<h3>Counts</h3>", definition_list(counts)]
    skipped_all: list[dict] = []
    for role in ("captions", "labels", "aggregate", "images"):
        if role not in sources:
            continue
        files = sources[role]
        parts.append(f"<h3>{escape(role)} ({len(files)} file{'s' if len(files) != 1 else ''})</h3>")
        shown = files[:20]
        more = f" and {len(files) - len(shown)} more" if len(files) > len(shown) else ""
        parts.append(f'<p class="note">{escape(", ".join(shown) + more)}</p>')
        metas = provenance.get(role) or []
        lines = merged(metas)
        if lines:
            parts.append(definition_list(lines))
        elif role != "images":
            parts.append('<p class="note">no provenance in this table\'s metadata</p>')
        for meta in metas:
            skipped_all.extend(find_skipped(meta))
    parts.append("<h3>This report</h3>")
    parts.append(definition_list(report_params))
    parts.append(f"<h3>Skipped samples ({len(skipped_all)})</h3>")
    if skipped_all:
        rows = [[str(s.get("key", "")), str(s.get("reason", ""))] for s in skipped_all[:MAX_SKIPPED_SHOWN]]
        parts.append(table(["sample", "reason"], rows, elem_id="skipped", text_cols=2))
        if len(skipped_all) > MAX_SKIPPED_SHOWN:
            parts.append(f'<p class="note">first {MAX_SKIPPED_SHOWN} shown</p>')
    else:
        parts.append('<p class="note">none recorded in the inputs\' metadata</p>')
    return "".join(parts)
