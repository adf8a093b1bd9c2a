"""The image browser's data: every caption once, its parts located and coloured by category,
and per (image, layer) the caption's index, entropy and F1 to the final caption, for the images
the page embeds (all, or a fixed sample of a large run: ``page/browser_sample.py``)."""

from __future__ import annotations

from ..inputs.layer_naming import LayerNaming
from ..inputs.shard_images import ShardImages
from ..metrics.labels import LabelView
from ..metrics.layer_stats import CaptionGrid, LayerStats
from ..page.browser_captions import intern_captions


def browser_data(grid: CaptionGrid, stats: LayerStats, labels: LabelView, categories: list[str],
                 colours: dict[str, str], images: ShardImages | None, naming: LayerNaming | None = None,
                 shown: list[int] | None = None) -> dict:
    """``shown``: the indices of the images to embed (default: every image)."""
    shown = list(range(len(grid.image_keys))) if shown is None else shown
    category_index = {c: i for i, c in enumerate(categories)}
    label_index: dict[str, int] = {}
    cells = intern_captions(grid, shown, labels, category_index, label_index)
    keys = [grid.image_keys[i] for i in shown]
    shards = [grid.shards[i] for i in shown]
    shard_names = list(dict.fromkeys(shards))
    shard_index = {s: i for i, s in enumerate(shard_names)}
    return {
        "layers": grid.layers,
        "layerLabels": [naming.describe(layer) for layer in grid.layers] if naming else None,
        "categories": categories,
        "colours": [colours[c] for c in categories],
        "labelSets": list(label_index),
        "captions": cells.captions,
        "spans": cells.spans,
        "images": {
            "keys": keys,
            "shards": shard_names,
            "shard": [shard_index[s] for s in shards],
            "cap": cells.cap.tolist(),
            "ent": cells.per_cell(grid.entropy),
            "f1": cells.per_cell(stats.row_f1),
            "settle": [stats.stays_close[i] for i in shown],
            "thumbs": [images.thumbnails.get(k, "") for k in keys] if images else None,
            "refs": [images.references.get(k, []) for k in keys] if images and images.references else None,
        },
    }
