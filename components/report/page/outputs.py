"""What a report writes and returns besides its page: the result object, CSV and page files,
and the lines on the shards a run left out."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field

from ...common import storage
from ...common.contracts import FailedShard


@dataclass
class ReportResult:
    metrics: dict[str, float]     # headline numbers, all finite floats (KFP Metrics)
    markdown: str                 # short summary (KFP Markdown)
    html: str                     # the page itself (KFP HTML)
    files: dict[str, str] = field(default_factory=dict)  # name -> URI written


def failed_shard_warnings(failed: list[FailedShard]) -> list[str]:
    """A line per shard the run left out, with the step that found it bad and why (the page's top)."""
    return [f"shard {f.shard} failed at {f.step} and is left out of this report: {f.reason}" for f in failed]


def failed_shards_markdown(failed: list[FailedShard]) -> list[str]:
    """The summary's lines on the shards the run left out (empty when none)."""
    if not failed:
        return []
    n = len(failed)
    lines = [f"**{n} shard{'s' if n != 1 else ''} failed** and {'are' if n != 1 else 'is'} left out of this report:", ""]
    lines += [f"- {_markdown_text(f.shard)} ({f.step}): {_markdown_text(f.reason)}" for f in failed]
    return lines + [""]


def _markdown_text(text: str) -> str:
    """Plain text in Markdown: characters that would start markup or HTML are escaped."""
    return re.sub(r"([\\`*_{}\[\]<>|~])", r"\\\1", " ".join(text.split()))


def write_csv(uri: str, header: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    storage.write_bytes(uri, buf.getvalue().encode())
    return uri


def write_page_files(out_uri: str, markdown: str, metrics: dict[str, float], html: str) -> dict[str, str]:
    contents = {"summary.md": markdown.encode(), "metrics.json": json.dumps(metrics, indent=1).encode(),
                "report.html": html.encode()}
    files = {}
    for name, data in contents.items():
        files[name] = storage.join(out_uri, name)
        storage.write_bytes(files[name], data)
    return files
