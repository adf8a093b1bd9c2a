"""Captions tables that carry per-patch maps (issue #21), written with the project's writer as the
caption step writes them (test helper): the ``grounding`` column (CAPTIONS_GROUNDED_SCHEMA) and the
patch grid in the metadata. The maps are deterministic blobs: the report's tests need maps whose
place they know, not the caption step's (tested on its own against an autograd reference)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from latent_verbalizer.components.common.contracts import (
    CAPTIONS_FORMAT,
    CAPTIONS_GROUNDED_SCHEMA,
    CAPTIONS_META_GROUNDING_GRID,
    CAPTIONS_VERSION,
    GROUNDING_FIELD,
)
from latent_verbalizer.components.common.tables import provenance, write_table


def blob_map(grid: tuple[int, int], centre: tuple[int, int], width: float = 1.0) -> np.ndarray:
    """A Gaussian blob on the patch grid, peaked at patch ``centre`` (row, col), summing to 1 (row-major)."""
    rows, cols = grid
    r, c = np.mgrid[0:rows, 0:cols]
    m = np.exp(-((r - centre[0]) ** 2 + (c - centre[1]) ** 2) / (2 * width ** 2))
    return (m / m.sum()).ravel()


def blob_centre(grid: tuple[int, int], image: int, layer: int, n_layers: int) -> tuple[int, int]:
    """Where the test maps peak: lower in the image as the layer deepens, further right for each image."""
    rows, cols = grid
    return (round(layer * (rows - 1) / max(n_layers - 1, 1)), (2 * image + 1) % cols)


def with_maps(captions: pa.Table, maps: list[np.ndarray | None]) -> pa.Table:
    """``captions`` (CAPTIONS_SCHEMA) with a map per row (None: no map) in the contract's column."""
    column = pa.array([None if m is None else np.asarray(m, dtype=np.float16) for m in maps], GROUNDING_FIELD.type)
    return captions.append_column(GROUNDING_FIELD, column)


def blob_maps(captions: pa.Table, grid: tuple[int, int], n_layers: int) -> list[np.ndarray]:
    """A blob per caption row at ``blob_centre`` (images numbered in their first-seen order)."""
    keys = list(dict.fromkeys(captions.column("image_key").to_pylist()))
    index = {k: i for i, k in enumerate(keys)}
    return [blob_map(grid, blob_centre(grid, index[k], layer, n_layers))
            for k, layer in zip(captions.column("image_key").to_pylist(), captions.column("layer").to_pylist())]


def write_grounded_captions(uri: str, captions: pa.Table, grid: tuple[int, int], parameters: dict) -> str:
    """One captions Parquet with maps (``captions`` has the grounding column), the grid in its metadata."""
    made_by = dict(provenance(**parameters), **{CAPTIONS_META_GROUNDING_GRID: list(grid)})
    write_table(uri, captions, CAPTIONS_GROUNDED_SCHEMA, CAPTIONS_FORMAT, CAPTIONS_VERSION, made_by)
    return uri


def write_grounded_run(prefix: str, captions: pa.Table, grid: tuple[int, int], parameters: dict) -> list[str]:
    """A finished run's captions under ``prefix`` as run_layouts.write_captions lays them out (a table and a
    manifest per shard), each table with its maps (``captions`` has the grounding column)."""
    import pyarrow.compute as pc

    from tests.run_layouts import write_captions

    uris = write_captions(prefix, captions.drop_columns([GROUNDING_FIELD.name]), parameters)
    for uri, shard in zip(uris, dict.fromkeys(captions.column("shard").to_pylist())):
        write_grounded_captions(uri, captions.filter(pc.equal(captions.column("shard"), shard)), grid, parameters)
    return uris
