"""How a run's model numbers its layers, read from the captions' metadata: the family, a display
label per 0-based block index, the block the model itself captions from, and relative depth.

The caption step records, in its provenance parameters (``parameters`` of the captions' metadata):

- ``model_family``: "open_clip-coca", "hf-blip", "hf-vision-encoder-decoder" or "hf-llava";
- ``layer_numbering``: ``{"n_layers": N, "normal_layer": k, "scheme": text, "labels": [N labels]}``.

Captions made before these keys existed (open_clip CoCa) fall back to family "open_clip-coca",
labels "block i", N = highest captioned layer + 1 and the last block as the normal one.
Relative depth of block k is (k + 1) / N: the last block is 1.0, so models of different depth
share one 0..1 axis.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...common.contracts import FAMILY_COCA as FALLBACK_FAMILY
from ...common.contracts import LAYER_NUMBERING_KEY as NUMBERING_KEY
from ...common.contracts import MODEL_FAMILY_KEY as FAMILY_KEY

FALLBACK_SCHEME = "0-based residual block of the vision encoder"


@dataclass(frozen=True)
class LayerNaming:
    family: str
    model: str | None
    pretrained: str | None
    n_layers: int          # blocks of the vision encoder
    normal_layer: int      # 0-based block the model itself captions from
    scheme: str            # how the labels number the blocks, in words
    labels: tuple[str, ...]  # display label per 0-based block index 0..n_layers-1
    recorded: bool         # False: not in the metadata, the fallback was used

    def label(self, layer: int) -> str:
        return self.labels[layer] if 0 <= layer < len(self.labels) else f"block {layer}"

    def depth(self, layer: int) -> float:
        """Relative depth of a 0-based block: (k + 1) / N, the last block 1.0."""
        return (layer + 1) / self.n_layers

    def describe(self, layer: int) -> str:
        """'block 5 (depth 0.25)': the model's own label and the relative depth, for tables and tooltips."""
        return f"{self.label(layer)} (depth {self.depth(layer):.2f})"

    def axis_title(self) -> str:
        return f"layer ({self.scheme})"

    def source_text(self) -> str:
        made = "recorded by the caption step" if self.recorded else (
            "not recorded in these captions' metadata (made before the model families): open_clip CoCa assumed, "
            "blocks numbered from 0, the highest captioned block taken as the last")
        return (f"{self.family}, {self.n_layers} blocks, labels: {self.scheme}; the model captions from "
                f"{self.label(self.normal_layer)}; {made}")


def _parameters(meta: dict) -> dict:
    params = meta.get("parameters")
    return params if isinstance(params, dict) else {}


def _get(meta: dict, key: str):
    params = _parameters(meta)
    return params[key] if key in params else meta.get(key)


def layer_naming(captions_meta: list[dict], layers: list[int], source: str = "captions") -> LayerNaming:
    """The layer naming of one run's captions (every captions file's metadata; they must agree).

    ``layers``: the captioned 0-based layers (for the fallback and to check the recorded count).
    ``source``: named in errors (e.g. "RUN_B s3://x/y captions").
    """
    families = {str(_get(m, FAMILY_KEY)) for m in captions_meta if _get(m, FAMILY_KEY) is not None}
    numberings = []
    for m in captions_meta:
        numbering = _get(m, NUMBERING_KEY)
        if numbering is not None and numbering not in numberings:
            numberings.append(numbering)
    if len(families) > 1 or len(numberings) > 1:
        raise ValueError(f"{source}: the captions files record different model families or layer numberings "
                         f"({sorted(families)}): one run's captions come from one model; pass one model's captions")
    first = captions_meta[0] if captions_meta else {}
    model, pretrained = _get(first, "model"), _get(first, "pretrained")
    model = str(model) if model is not None else None
    pretrained = str(pretrained) if pretrained not in (None, "") else None
    family = families.pop() if families else FALLBACK_FAMILY
    if not numberings:
        n_layers = max(layers) + 1 if layers else 1
        return LayerNaming(family, model, pretrained, n_layers, n_layers - 1, FALLBACK_SCHEME,
                           tuple(f"block {i}" for i in range(n_layers)), False)
    return _recorded_naming(numberings[0], family, model, pretrained, layers, source)


def _recorded_naming(numbering, family: str, model: str | None, pretrained: str | None, layers: list[int],
                     source: str) -> LayerNaming:
    fix = "re-run the caption step with this version, or remove the key to fall back to block numbers"
    if not isinstance(numbering, dict):
        raise ValueError(f"{source}: metadata {NUMBERING_KEY!r} must be an object, not {numbering!r}; {fix}")
    n_layers, normal, labels = numbering.get("n_layers"), numbering.get("normal_layer"), numbering.get("labels")
    if not isinstance(n_layers, int) or isinstance(n_layers, bool) or n_layers < 1:
        raise ValueError(f"{source}: {NUMBERING_KEY}.n_layers must be a whole number >= 1, not {n_layers!r}; {fix}")
    if not isinstance(labels, list) or len(labels) != n_layers or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"{source}: {NUMBERING_KEY}.labels must list {n_layers} texts (one per block), "
                         f"got {labels!r}; {fix}")
    if not isinstance(normal, int) or isinstance(normal, bool) or not 0 <= normal < n_layers:
        raise ValueError(f"{source}: {NUMBERING_KEY}.normal_layer must be a block index in 0..{n_layers - 1}, "
                         f"not {normal!r}; {fix}")
    beyond = [layer for layer in layers if not 0 <= layer < n_layers]
    if beyond:
        raise ValueError(f"{source}: captions at layers {beyond[:5]}, but {NUMBERING_KEY} records only "
                         f"{n_layers} blocks; the captions and their metadata disagree: {fix}")
    return LayerNaming(family, model, pretrained, n_layers, normal, str(numbering.get("scheme") or "as recorded"),
                       tuple(labels), True)
