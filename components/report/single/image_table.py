"""image_captions.parquet: every (image, layer) caption of the run with the numbers the image browser
shows (entropy, F1 to the final caption, the layer the caption settles at), and whether the page
embeds the image. The page's browser may show a sample (``page/browser_sample.py``); this table
never is one."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ...common import storage
from ...common.tables import write_table
from ..inputs.layer_naming import LayerNaming
from ..metrics.layer_stats import CaptionGrid, LayerStats

IMAGE_TABLE = "image_captions.parquet"
IMAGE_TABLE_FORMAT = "latent-verbalizer/report/image-captions"
IMAGE_TABLE_SCHEMA = pa.schema([
    ("image_key", pa.string()),          # "key (shard)" for a key found in more than one shard
    ("shard", pa.string()),
    ("layer", pa.int32()),               # 0-based block
    ("layer_label", pa.string()),        # the model's own name of the layer
    ("relative_depth", pa.float64()),    # (k + 1) / N
    ("caption", pa.string()),
    ("entropy_bits", pa.float64()),
    ("f1_to_final", pa.float64()),       # token F1 to the image's last-layer caption (null: none)
    ("settles_at_layer", pa.int32()),    # per image: first layer from which it stays close (null: never)
    ("in_page", pa.bool_()),             # the page's image browser embeds this image
])


def image_table(grid: CaptionGrid, stats: LayerStats, naming: LayerNaming, shown: list[int]) -> pa.Table:
    """A row per (image, layer) caption, image by image in the grid's order."""
    image, column = np.nonzero(grid.rows >= 0)
    rows = grid.rows[image, column]
    in_page = np.zeros(len(grid.image_keys), dtype=bool)
    in_page[np.asarray(shown, dtype=np.int64)] = True
    take = pa.array(image)
    return pa.table({
        "image_key": pa.array(grid.image_keys, pa.string()).take(take),
        "shard": pa.array(grid.shards, pa.string()).take(take),
        "layer": np.asarray(grid.layers, dtype=np.int32)[column],
        "layer_label": pa.array([naming.label(layer) for layer in grid.layers], pa.string()).take(pa.array(column)),
        "relative_depth": np.asarray([naming.depth(layer) for layer in grid.layers], dtype=np.float64)[column],
        "caption": pa.array(grid.captions, pa.string()).take(pa.array(rows)),
        "entropy_bits": grid.entropy[rows],
        "f1_to_final": pa.array(np.asarray(stats.row_f1, dtype=np.float64)[rows], from_pandas=True),
        "settles_at_layer": pa.array(stats.stays_close, pa.int32()).take(take),
        "in_page": in_page[image],
    }, schema=IMAGE_TABLE_SCHEMA)


def write_image_table(out_uri: str, grid: CaptionGrid, stats: LayerStats, naming: LayerNaming, shown: list[int],
                      made_by: dict) -> dict[str, str]:
    """Write image_captions.parquet under ``out_uri`` (with what made it in its metadata)."""
    uri = storage.join(out_uri, IMAGE_TABLE)
    write_table(uri, image_table(grid, stats, naming, shown), IMAGE_TABLE_SCHEMA, IMAGE_TABLE_FORMAT, 1, made_by)
    return {IMAGE_TABLE: uri}
