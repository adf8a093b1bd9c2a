"""Build the report's input tables from the original study's real outputs (test fixtures only).

- captions: ``caps_batch0.json`` + ``entropy_batch0.json`` (image_key = image index, layer 0..23)
- labels: the raw Llama answers of ``llama70b_labels/layer_N.json`` parsed leniently
  (duplicate keys kept via ``object_pairs_hook``); the first answer seen for a caption wins,
  as the categorize step labels every distinct caption once
- aggregate: the study's method (first label per part, merged via merged_categories.yaml,
  per-caption percentages, mean per layer), written here independently of the product.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from latent_verbalizer.components.common.contracts import AGGREGATE_SCHEMA, CAPTIONS_SCHEMA, LABELS_SCHEMA
from latent_verbalizer.components.common.tables import provenance, write_table

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"   # ../shared/reference beside the checkout
N_LAYERS = 24
MODEL = "coca_ViT-L-14"
PRETRAINED = "mscoco_finetuned_laion2B-s13B-b90k"
LLM = "meta-llama/Llama-3.1-70B-Instruct"


def reference_available() -> bool:
    return (REFERENCE / "caps_batch0.json").exists() and (REFERENCE / "llama70b_labels").is_dir()


def load_reference():
    caps = json.loads((REFERENCE / "caps_batch0.json").read_text())
    ents = json.loads((REFERENCE / "entropy_batch0.json").read_text())
    answers = {layer: json.loads((REFERENCE / "llama70b_labels" / f"layer_{layer}.json").read_text())
               for layer in range(N_LAYERS)}
    return caps, ents, answers


def parse_answer(text: str) -> list[tuple[str, list[str]]] | None:
    """The study's raw answer -> [(part, labels)], duplicate keys kept; None if it does not parse."""
    try:
        obj = json.loads(text, object_pairs_hook=lambda pairs: pairs)
    except ValueError:
        return None
    if not isinstance(obj, list):
        return None
    out = []
    for k, v in obj:
        labels = v if isinstance(v, list) else [v]
        # a nested object (seen in a few answers) arrives as a list of pairs: no labels then
        out.append((str(k), [x if isinstance(x, str) else "" for x in labels]))
    return out


def merge_map() -> dict[str, str]:
    import yaml

    data = yaml.safe_load((REFERENCE / "merged_categories.yaml").read_text())
    return {str(label if label is not None else ""): cat for cat, labels in data.items() for label in labels}


def captions_table(caps, ents, n_images: int | None = None, layers=range(N_LAYERS), repeat: int = 1,
                   shard: str = "batch0") -> pa.Table:
    rows = {n: [] for n in CAPTIONS_SCHEMA.names}
    n = n_images or len(caps["layer_0"])
    for rep in range(repeat):
        for i in range(n):
            key = f"{i:06d}" if rep == 0 else f"{i:06d}-r{rep}"
            for layer in layers:
                c = caps[f"layer_{layer}"][i]
                rows["image_key"].append(key)
                rows["shard"].append(shard if rep == 0 else f"{shard}-r{rep}")
                rows["layer"].append(layer)
                rows["caption"].append(c)
                toks = list(range(len(c.split()) + 1))
                rows["token_ids"].append(toks)
                rows["n_tokens"].append(len(toks))
                rows["stop"].append("length" if len(toks) >= 30 else "eos")
                rows["entropy_bits"].append(ents[f"layer_{layer}"][i])
                rows["mean_logprob"].append(-1.0)
    return pa.table(rows, schema=CAPTIONS_SCHEMA)


def labels_table(caps, answers, n_images: int | None = None, layers=range(N_LAYERS)) -> pa.Table:
    seen: dict[str, tuple] = {}
    n = n_images or len(caps["layer_0"])
    for layer in layers:
        for i in range(n):
            c = caps[f"layer_{layer}"][i]
            if c in seen:
                continue
            parsed = parse_answer(answers[layer][i])
            if parsed is None:
                seen[c] = ([], "unparseable")
            elif not parsed:
                seen[c] = ([], "no_parts")
            else:
                seen[c] = ([{"text": t, "labels": labs} for t, labs in parsed], "ok")
    return pa.table({
        "caption": list(seen),
        "parts": [v[0] for v in seen.values()],
        "model": [LLM] * len(seen),
        "status": [v[1] for v in seen.values()],
    }, schema=LABELS_SCHEMA)


def aggregate_table(captions: pa.Table, labels: pa.Table, mapping: dict[str, str]) -> pa.Table:
    """The study's per-layer table, computed the straightforward way."""
    first_labels = {c: [(p["labels"] or [""])[0] for p in parts]
                    for c, parts in zip(labels.column("caption").to_pylist(), labels.column("parts").to_pylist())}
    per_layer: dict[int, list[dict[str, float]]] = defaultdict(list)
    for layer, c in zip(captions.column("layer").to_pylist(), captions.column("caption").to_pylist()):
        firsts = first_labels.get(c)
        if not firsts:
            continue
        shares: dict[str, float] = defaultdict(float)
        for lab in firsts:
            shares[mapping.get(lab, "UNKNOWN")] += 100.0 / len(firsts)
        per_layer[layer].append(shares)
    rows = {n: [] for n in AGGREGATE_SCHEMA.names}
    for layer in sorted(per_layer):
        caps = per_layer[layer]
        cats = sorted({k for s in caps for k in s})
        for cat in cats:
            rows["layer"].append(layer)
            rows["category"].append(cat)
            rows["share_percent"].append(sum(s.get(cat, 0.0) for s in caps) / len(caps))
            rows["n_captions"].append(len(caps))
    return pa.table(rows, schema=AGGREGATE_SCHEMA)


def write_reference_tables(out_dir: str, n_images: int | None = None, layers=range(N_LAYERS), repeat: int = 1,
                           with_aggregate: bool = True, captions_override: pa.Table | None = None) -> dict[str, str]:
    """Write captions/labels/aggregate Parquet files (with provenance metadata); returns their paths."""
    caps, ents, answers = load_reference()
    captions = captions_override if captions_override is not None else captions_table(
        caps, ents, n_images, layers, repeat)
    labels = labels_table(caps, answers, n_images, layers)
    os.makedirs(out_dir, exist_ok=True)
    paths = {"captions": os.path.join(out_dir, "captions-batch0.parquet"),
             "labels": os.path.join(out_dir, "labels.parquet")}
    made = provenance(model=MODEL, pretrained=PRETRAINED, layers=list(layers), seq_len=30, precision="fp32")
    made.update({"model": MODEL, "pretrained": PRETRAINED,
                 "skipped": [{"key": "000123-broken", "reason": "image decode failed: truncated JPEG"}]})
    write_table(paths["captions"], captions, CAPTIONS_SCHEMA, "latent-verbalizer/captions", 1, made)
    # as the categorize step writes them: one set of parameters on both tables, and the
    # label -> category map in the aggregate's metadata
    categorize_made = provenance(captions=[paths["captions"]], model=LLM, labels="llama70b_labels raw answers")
    write_table(paths["labels"], labels, LABELS_SCHEMA, "latent-verbalizer/labels", 1, categorize_made)
    if with_aggregate:
        mapping = merge_map()
        agg = aggregate_table(captions, labels, mapping)
        paths["aggregate"] = os.path.join(out_dir, "aggregate.parquet")
        write_table(paths["aggregate"], agg, AGGREGATE_SCHEMA, "latent-verbalizer/labels/aggregate", 1,
                    {**categorize_made, "category_map": mapping})
    return paths
