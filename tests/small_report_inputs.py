"""Small report inputs written row by row: captions and categorize tables of a few (image key,
layer, caption) rows, and the hostile caption texts (HTML, script, odd Unicode) the page must show
as text."""

from __future__ import annotations

import os

import pyarrow as pa

from latent_verbalizer.components.common.contracts import CAPTIONS_SCHEMA
from latent_verbalizer.components.common.tables import provenance, write_table
from tests.categorized_tables import labels_table, write_categorized

HOSTILE = [
    "<script>alert(1)</script>",
    "a cat </script><img src=x onerror=alert(2)> on a mat",
    'a "quoted" & <b>bold</b> dog \u2028 with <!-- comment --> and ]]>',
    "emoji 🐈 cat and \u00e9t\u00e9 <svg onload=alert(3)>",
]


def write_caption_rows(rows: list[tuple[str, int, str]], path: str, entropy: float = 3.0, **made_by) -> str:
    """A captions table of (image key, layer, caption) rows; ``made_by``: provenance settings."""
    t = pa.table({
        "image_key": [r[0] for r in rows], "shard": ["s0"] * len(rows), "layer": [r[1] for r in rows],
        "caption": [r[2] for r in rows], "token_ids": [[1, 2, 3]] * len(rows), "n_tokens": [3] * len(rows),
        "stop": ["eos"] * len(rows), "entropy_bits": [entropy + r[1] for r in rows], "mean_logprob": [-1.0] * len(rows),
    }, schema=CAPTIONS_SCHEMA)
    write_table(path, t, CAPTIONS_SCHEMA, "latent-verbalizer/captions", 1,
                provenance(**{"model": "m<x>", "precision": "fp32", **made_by}))
    return path


IDENTITY_MAP = {label: label for label in ("animal", "numbers", "object", "color", "position", "actions", "style",
                                           "shape", "<b>evil label</b>")}


def write_categorized_rows(rows: list[tuple[str, int, str]], entries, out_dir, category_map=None, **write_args) -> tuple[str, str]:
    """labels.parquet and aggregate.parquet of ``entries`` over the caption ``rows``, as categorize writes them."""
    os.makedirs(out_dir, exist_ok=True)
    return write_categorized(str(out_dir), [(layer, c) for _, layer, c in rows], labels_table(entries),
                             category_map or IDENTITY_MAP, **write_args)


def hostile_inputs(tmp_path) -> tuple[str, str, str]:
    """Captions, labels and aggregate whose texts, keys and labels are all HTML or script."""
    rows = [(f"img<{i}>&\"'", layer, HOSTILE[(i + layer) % len(HOSTILE)]) for i in range(3) for layer in range(2)]
    caps = write_caption_rows(rows, str(tmp_path / "c.parquet"))
    labels, aggregate = write_categorized_rows(rows, [
        (HOSTILE[0], [("<script>", ["<b>evil label</b>"]), ("alert(1)", ["actions"])], "ok"),
        (HOSTILE[1], [("</script><img src=x onerror=alert(2)>", ["object"])], "ok"),
        (HOSTILE[2], [("& <b>bold</b>", ["style"])], "part_not_in_caption"),
        (HOSTILE[3], [("🐈 cat", ["animal"]), ("<svg onload=alert(3)>", ["shape"])], "ok"),
    ], tmp_path)
    return caps, labels, aggregate
