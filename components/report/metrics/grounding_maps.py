"""Where each caption looks: the per-patch maps a run's captions tables carry (issue #21), read
row by row alongside the captions, and how spread they are per layer.

A captions table with maps has the contract's ``grounding`` column (float16 per patch, row-major
over the encoder's patch grid, summing to 1) and the grid ``[rows, cols]`` in its metadata
(``CAPTIONS_META_GROUNDING_GRID``). The report reads captions with ``CAPTIONS_SCHEMA``, which
leaves the column out; this module reads it on its own, only from the files whose metadata names a
grid, so a run without maps costs nothing more.

Spread of one map s (renormalised to sum 1 after float16 storage):

- entropy in bits, ``-sum_p s_p log2 s_p`` (0 log 0 = 0): log2(P) for a uniform map of P patches,
  0 for a map on one patch;
- the share of the top 10% of patches: the sum of the ``ceil(P / 10)`` largest s_p (a uniform map
  holds ceil(P / 10) / P, a one-patch map 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ...common import storage
from ...common.contracts import CAPTIONS_META_GROUNDING_GRID, GROUNDING_FIELD
from ..inputs.tables import ReportInputs
from .layer_stats import CaptionGrid

TOP_SHARE_OF_PATCHES = 0.10


@dataclass
class RunMaps:
    """Every caption row's map (row order of ``ReportInputs.captions``): a run's maps as the report uses them."""

    grid: tuple[int, int]           # the encoder's patch grid (rows, cols)
    weights: np.ndarray             # [caption rows, rows * cols] float16; a row without a map is all zeros
    present: np.ndarray             # [caption rows] bool: the row has a usable map
    unusable: int = 0               # maps left out: negative or non-finite values, or summing to 0

    @property
    def n_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def normalised(self, rows: np.ndarray) -> np.ndarray:
        """The maps of ``rows`` (all present) in float64, each summing to 1."""
        s = self.weights[rows].astype(np.float64)
        return s / s.sum(axis=1, keepdims=True)


def top_count(n_patches: int) -> int:
    """How many patches are the top 10%: ceil(P / 10), at least 1."""
    return max(1, math.ceil(n_patches * TOP_SHARE_OF_PATCHES - 1e-9))


def map_spread(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per map (rows of ``maps``, each summing to 1): its entropy in bits and the share of its top 10% of patches."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 2:
        raise ValueError(f"map_spread: expected [maps, patches], got shape {maps.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(maps > 0, maps * np.log2(np.where(maps > 0, maps, 1.0)), 0.0)
    entropy = -terms.sum(axis=1)
    k = top_count(maps.shape[1])
    top = np.sort(maps, axis=1)[:, -k:].sum(axis=1)
    return np.maximum(entropy, 0.0), top


@dataclass
class LayerSpread:
    """Per layer: how many maps, and the 25th, 50th and 75th percentiles of their entropy and top-10% share."""

    layers: list[int]
    n_maps: list[int]
    n_patches: int
    top_k: int                               # patches in the top 10%
    entropy_bits: dict[str, list[float]]     # "p25", "median", "p75" per layer (nan: no map at the layer)
    top_share: dict[str, list[float]]        # the same, of the top-10% share (0..1)

    @property
    def uniform_entropy_bits(self) -> float:
        return math.log2(self.n_patches)

    @property
    def uniform_top_share(self) -> float:
        return self.top_k / self.n_patches


def layer_spread(maps: RunMaps, grid: CaptionGrid) -> LayerSpread:
    """The spread of the maps of each layer's captions (one per image: the grid's rows)."""
    quantiles = {"p25": 25, "median": 50, "p75": 75}
    entropy = {k: [] for k in quantiles}
    top = {k: [] for k in quantiles}
    counts = []
    for j in range(len(grid.layers)):
        rows = grid.rows[:, j]
        rows = rows[rows >= 0]
        rows = rows[maps.present[rows]]
        counts.append(int(len(rows)))
        values = map_spread(maps.normalised(rows)) if len(rows) else (np.array([]), np.array([]))
        for out, v in ((entropy, values[0]), (top, values[1])):
            for name, q in quantiles.items():
                out[name].append(float(np.percentile(v, q)) if len(v) else math.nan)
    return LayerSpread(list(grid.layers), counts, maps.n_patches, top_count(maps.n_patches), entropy, top)


def _grid_of(meta: dict, uri: str) -> tuple[int, int] | None:
    grid = meta.get(CAPTIONS_META_GROUNDING_GRID)
    if grid is None:
        return None
    if (not isinstance(grid, list) or len(grid) != 2 or not all(isinstance(n, int) and n > 0 for n in grid)):
        raise ValueError(f"--captions {uri}: its metadata's {CAPTIONS_META_GROUNDING_GRID} is {grid!r}, not "
                         "[rows, cols] of the patch grid; re-run the caption step with grounding on")
    return grid[0], grid[1]


def _read_grounding_column(uri: str) -> pa.ListArray:
    import pyarrow.parquet as pq

    with storage.open_read(uri) as f:
        data = f.read()
    schema = pq.read_schema(pa.BufferReader(data))
    if GROUNDING_FIELD.name not in schema.names:
        raise ValueError(f"--captions {uri}: its metadata names a {CAPTIONS_META_GROUNDING_GRID} but the table has no "
                         f"{GROUNDING_FIELD.name!r} column; the table is not as the caption step writes it, re-run it")
    table = pq.read_table(pa.BufferReader(data), columns=[GROUNDING_FIELD.name])
    return table.column(0).combine_chunks().cast(GROUNDING_FIELD.type)


def read_run_maps(inputs: ReportInputs) -> RunMaps | None:
    """The maps of every caption row, read from the captions files whose metadata names a grid
    (files without maps leave their rows empty); None when no file has maps.

    The rows follow ``inputs.captions``: the files concatenated in ``inputs.sources["captions"]`` order."""
    files = inputs.sources.get("captions") or []
    metas = inputs.provenance.get("captions") or []
    grids = [_grid_of(meta, uri) for meta, uri in zip(metas, files)]
    with_maps = [(uri, g) for uri, g in zip(files, grids) if g is not None]
    if not with_maps:
        return None
    first_uri, grid = with_maps[0]
    for uri, other in with_maps[1:]:
        if other != grid:
            raise ValueError(f"--captions {uri}: its maps are on a {other[0]} x {other[1]} patch grid, {first_uri}'s "
                             f"on {grid[0]} x {grid[1]}: the captions come from different models; report each "
                             "run on its own")
    n_patches = grid[0] * grid[1]
    weights = np.zeros((inputs.captions.num_rows, n_patches), dtype=np.float16)
    present = np.zeros(inputs.captions.num_rows, dtype=bool)
    offset = 0
    for uri, file_grid in zip(files, grids):
        if file_grid is None:
            offset += _row_count(uri)
            continue
        column = _read_grounding_column(uri)
        n_rows = len(column)
        if offset + n_rows > len(present):
            offset += n_rows
            break  # more rows than the captions read: the check below names the files
        _place_maps(uri, column, n_patches, weights[offset:offset + n_rows], present[offset:offset + n_rows])
        offset += n_rows
    if offset != inputs.captions.num_rows:
        raise ValueError(f"--captions {', '.join(files)}: the files hold {offset} rows of maps and captions, but "
                         f"{inputs.captions.num_rows} caption rows were read; a file changed while the report ran, "
                         "run it again")
    usable = present & _usable(weights)
    return RunMaps(grid, weights, usable, int(present.sum() - usable.sum()))


def _row_count(uri: str) -> int:
    """The rows of a captions file without maps (from its Parquet footer)."""
    import pyarrow.parquet as pq

    with storage.open_read(uri) as f:
        return pq.ParquetFile(pa.BufferReader(f.read())).metadata.num_rows


def _place_maps(uri: str, column: pa.ListArray, n_patches: int, weights: np.ndarray, present: np.ndarray) -> None:
    """One file's maps into its rows of ``weights``; a null map leaves its row absent."""
    valid = np.asarray(column.is_valid())
    lengths = np.asarray(column.value_lengths().fill_null(0))
    wrong = np.flatnonzero(valid & (lengths != n_patches))
    if len(wrong):
        raise ValueError(f"--captions {uri}: row {int(wrong[0])}'s map has {int(lengths[wrong[0]])} values, but the "
                         f"metadata's {CAPTIONS_META_GROUNDING_GRID} has {n_patches} patches; the table is not as the "
                         "caption step writes it, re-run it")
    values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float16)
    weights[valid] = values.reshape(-1, n_patches)
    present[valid] = True


def _usable(weights: np.ndarray) -> np.ndarray:
    """Rows that are a map: finite, not negative, with a positive sum."""
    w = weights.astype(np.float32)
    return np.isfinite(w).all(axis=1) & (w >= 0).all(axis=1) & (w.sum(axis=1) > 0)
