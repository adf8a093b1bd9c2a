"""Read the report's inputs (captions, labels, aggregate tables; any storage URI) and check that
they belong together: labels and aggregate from one categorize run, over these captions."""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from ...common import storage
from ...common.contracts import AGGREGATE_META_CATEGORY_MAP as CATEGORY_MAP_KEY
from ...common.contracts import AGGREGATE_SCHEMA, CAPTIONS_SCHEMA, LABELS_SCHEMA
from ...common.tables import read_table, table_metadata

log = logging.getLogger("lverb.report")


@dataclass
class CategorizeOutput:
    """The categorize step's two tables: a row per distinct caption, and the per-layer shares."""

    labels: pa.Table                 # LABELS_SCHEMA
    aggregate: pa.Table              # AGGREGATE_SCHEMA
    category_map: dict[str, str]     # label -> category, from the aggregate's metadata


@dataclass
class ReportInputs:
    captions: pa.Table                      # CAPTIONS_SCHEMA, every file concatenated
    categorized: CategorizeOutput | None    # None: no labels given (a report of the captions alone)
    sources: dict[str, list[str]] = field(default_factory=dict)      # role -> URIs read
    provenance: dict[str, list[dict]] = field(default_factory=dict)  # role -> metadata of each file


def resolve_uris(uris: list[str] | str, role: str) -> list[str]:
    """Files named by URIs, brace/glob patterns or folders (every ``*.parquet`` below)."""
    if isinstance(uris, str):
        uris = [uris]
    found: list[str] = []
    for uri in uris:
        if any(ch in uri for ch in "*?[{"):
            matched = storage.expand_pattern(uri)
            if not matched:
                raise FileNotFoundError(f"--{role} {uri}: the pattern matches nothing; check the path or pattern")
            found.extend(matched)
        elif storage.exists(uri) and not _is_local_dir(uri):
            found.append(uri)
        else:
            listed = [u for u in _list_folder(uri) if u.endswith(".parquet")]
            if not listed:
                raise FileNotFoundError(
                    f"--{role} {uri}: no such file, and no .parquet files under it; "
                    f"pass the {role} Parquet written by the previous step"
                )
            found.extend(listed)
    return list(dict.fromkeys(found))


def _is_local_dir(uri: str) -> bool:
    return not storage.is_s3(uri) and os.path.isdir(storage.local_path(uri))


def _list_folder(uri: str) -> list[str]:
    if storage.is_s3(uri) or _is_local_dir(uri):
        return storage.list_uris(uri)
    return []


def read_contract_table(uri: str, schema: pa.Schema, role: str) -> tuple[pa.Table, dict]:
    """A contract table (the contract's reader) and its provenance metadata; errors name the role."""
    try:
        table = read_table(uri, schema)
    except pa.ArrowInvalid as e:
        raise ValueError(f"--{role} {uri}: not a readable Parquet file ({e}); pass the {role} table") from e
    except ValueError as e:
        raise ValueError(f"--{role} {uri}: not a {role} table ({e})") from e
    return table, table_metadata(table)


def single_file(uri: str, role: str) -> str:
    files = resolve_uris(uri, role)
    if len(files) != 1:
        raise ValueError(f"--{role} {uri}: names {len(files)} files; pass exactly one {role} table")
    return files[0]


def load_inputs(captions_uris: list[str] | str, labels_uri: str | None, aggregate_uri: str | None) -> ReportInputs:
    """Read and check the inputs. Labels and aggregate come together (the categorize step writes
    both) or not at all (a report of the captions alone)."""
    if not captions_uris:
        raise ValueError("--captions: no captions tables given; pass the Parquet files of the caption step")
    if bool(labels_uri) != bool(aggregate_uri):
        given, other = ("labels", "aggregate") if labels_uri else ("aggregate", "labels")
        raise ValueError(f"--{given} given without --{other}: the categorize step writes labels.parquet and "
                         f"aggregate.parquet side by side; pass both (or neither, for a report of the captions alone)")
    caption_files = resolve_uris(captions_uris, "captions")
    read = [read_contract_table(u, CAPTIONS_SCHEMA, "captions") for u in caption_files]
    captions = pa.concat_tables([t.replace_schema_metadata(None) for t, _ in read])
    if captions.num_rows == 0:
        raise ValueError(
            f"--captions {', '.join(caption_files)}: no caption rows at all; the caption step wrote empty "
            "tables (no images in the shards, or every sample skipped: see its logs and manifests)"
        )
    inputs = ReportInputs(captions, None, {"captions": caption_files}, {"captions": [m for _, m in read]})
    if labels_uri:
        inputs.categorized = load_categorize_output(inputs, labels_uri, aggregate_uri)
        check_labels_cover_captions(inputs.categorized.labels, captions, inputs.sources["labels"][0])
        check_aggregate_fits_captions(inputs.categorized.aggregate, captions, inputs.sources["aggregate"][0])
    log.info("report inputs: %d caption rows from %d files%s", captions.num_rows, len(caption_files),
             f", {inputs.categorized.labels.num_rows} labelled captions" if inputs.categorized else "")
    return inputs


def load_categorize_output(inputs: ReportInputs, labels_uri: str, aggregate_uri: str) -> CategorizeOutput:
    labels_file, aggregate_file = single_file(labels_uri, "labels"), single_file(aggregate_uri, "aggregate")
    labels, labels_meta = read_contract_table(labels_file, LABELS_SCHEMA, "labels")
    aggregate, aggregate_meta = read_contract_table(aggregate_file, AGGREGATE_SCHEMA, "aggregate")
    check_same_categorize_run(labels_meta, labels_file, aggregate_meta, aggregate_file)
    inputs.sources.update(labels=[labels_file], aggregate=[aggregate_file])
    inputs.provenance.update(labels=[labels_meta], aggregate=[aggregate_meta])
    return CategorizeOutput(labels, aggregate, category_map_of(aggregate_meta, aggregate_file))


def check_same_categorize_run(labels_meta: dict, labels_uri: str, aggregate_meta: dict, aggregate_uri: str) -> None:
    """The categorize step writes both tables with one set of parameters (model, label set,
    captions, ...): tables that differ on a parameter both record come from different runs.
    (A key only one table records, e.g. the answer schema in the labels', is not compared.)"""
    labels_params, aggregate_params = labels_meta.get("parameters"), aggregate_meta.get("parameters")
    for uri, params, role in ((labels_uri, labels_params, "labels"), (aggregate_uri, aggregate_params, "aggregate")):
        if not isinstance(params, dict):
            raise ValueError(f"--{role} {uri}: no categorize parameters in its metadata, so it cannot be checked "
                             "against the other table; re-run categorize")
    differing = sorted(k for k in labels_params.keys() & aggregate_params.keys()
                       if labels_params[k] != aggregate_params[k])
    if differing:
        shown = "; ".join(f"{k}: {labels_params.get(k)!r} vs {aggregate_params.get(k)!r}" for k in differing[:4])
        raise ValueError(f"--labels {labels_uri} and --aggregate {aggregate_uri} come from different categorize runs "
                         f"({shown}); pass the two tables one run wrote")


def check_labels_cover_captions(labels: pa.Table, captions: pa.Table, labels_uri: str) -> None:
    """Categorize labels every distinct caption once: a caption without a labels row means the
    labels were made from other captions."""
    distinct = pc.unique(captions.column("caption"))
    missing = distinct.filter(pc.invert(pc.is_in(distinct, value_set=labels.column("caption"))))
    if len(missing):
        raise ValueError(f"--labels {labels_uri}: {len(missing)} of the {len(distinct)} distinct captions have no "
                         f"labels row (e.g. {missing[0].as_py()!r}): the labels were made from other captions; pass the "
                         "labels of these captions, or re-run categorize on them")


def check_aggregate_fits_captions(aggregate: pa.Table, captions: pa.Table, aggregate_uri: str) -> None:
    """Each aggregate row counts the captions of its layer that entered the shares: a layer the
    captions lack, or more captions than the layer has, means another run's aggregate."""
    rows_per_layer = Counter(captions.column("layer").to_pylist())
    for layer, n_captions in zip(aggregate.column("layer").to_pylist(), aggregate.column("n_captions").to_pylist()):
        if n_captions > rows_per_layer.get(layer, 0):
            raise ValueError(f"--aggregate {aggregate_uri}: layer {layer} counts {n_captions} captions, but the "
                             f"captions have {rows_per_layer.get(layer, 0)} at that layer: the aggregate was made "
                             "from other captions; pass the aggregate of these captions, or re-run categorize")


def category_map_of(aggregate_meta: dict, uri: str) -> dict[str, str]:
    """The label -> category map the categorize step stored in its aggregate table's metadata
    (key ``category_map``). Missing or malformed: an error naming the file and the fix."""
    mapping = aggregate_meta.get(CATEGORY_MAP_KEY)
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError(f"--aggregate {uri}: its metadata has no label-to-category map ({CATEGORY_MAP_KEY!r}); "
                         "it was not written by this version's categorize step: re-run categorize and pass its "
                         "aggregate.parquet")
    bad = [(k, v) for k, v in mapping.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise ValueError(f"--aggregate {uri}: metadata {CATEGORY_MAP_KEY!r} must map each label to one category "
                         f"name, but has {bad[:3]}; re-run categorize")
    return mapping
