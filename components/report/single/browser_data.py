"""The image browser's data: every caption once, its parts located and coloured by category,
and per (image, layer) the caption's index, entropy and F1 to the final caption."""

from __future__ import annotations

from ..inputs.layer_naming import LayerNaming
from ..inputs.shard_images import ShardImages
from ..metrics.labels import LabelView
from ..metrics.layer_stats import CaptionGrid, LayerStats
from ..page.browser_captions import intern_captions


def browser_data(grid: CaptionGrid, stats: LayerStats, labels: LabelView, categories: list[str],
                 colours: dict[str, str], images: ShardImages | None, naming: LayerNaming | None = None) -> dict:
    category_index = {c: i for i, c in enumerate(categories)}
    label_index: dict[str, int] = {}
    cells = intern_captions(grid, range(len(grid.image_keys)), labels, category_index, label_index)
    shard_names = list(dict.fromkeys(grid.shards))
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
            "keys": grid.image_keys,
            "shards": shard_names,
            "shard": [shard_index[s] for s in grid.shards],
            "cap": cells.cap.tolist(),
            "ent": cells.per_cell(grid.entropy),
            "f1": cells.per_cell(stats.row_f1),
            "settle": stats.stays_close,
            "thumbs": [images.thumbnails.get(k, "") for k in grid.image_keys] if images else None,
            "refs": [images.references.get(k, []) for k in grid.image_keys] if images and images.references else None,
        },
    }
