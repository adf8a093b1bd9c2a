"""open_clip CoCa as a model family (the study's model; loading lives in ``coca_loading``)."""

from __future__ import annotations

import torch

from .base import COCA, LayerNumbering, VisionLanguageModel
from .coca_loading import LoadedCoca, caption_text, load_coca, vision_block_outputs


class CocaModel(VisionLanguageModel):
    """CoCa: block ``k`` is ``visual.transformer.resblocks[k]``; the decoder reads the last block
    through ``attn_pool`` and ``ln_post`` (built by the caption step's CoCa decoder)."""

    family = COCA

    def __init__(self, loaded: LoadedCoca):
        super().__init__(loaded.model, loaded.name, loaded.pretrained, loaded.tokenizer)
        self.transform = loaded.preprocess

    @property
    def n_layers(self) -> int:
        return len(self.model.visual.transformer.resblocks)

    @property
    def image_size(self) -> int:
        size = self.model.visual.image_size
        return max(size) if isinstance(size, (tuple, list)) else size

    def feature_shape(self) -> tuple[int, int]:
        return self.model.visual.positional_embedding.shape[0], self.model.visual.transformer.width

    def preprocess(self, image) -> torch.Tensor:
        return self.transform(image)

    def vision_tower(self) -> torch.nn.Module:
        return self.model.visual

    def vision_block_outputs(self, pixels: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        return vision_block_outputs(self.model.visual, pixels, layers)

    def caption_text(self, token_ids: list[int]) -> str:
        return caption_text(self.tokenizer, token_ids)

    def layer_numbering(self) -> LayerNumbering:
        n = self.n_layers
        return LayerNumbering(n_layers=n, normal_layer=n - 1, scheme="visual.transformer.resblocks[k]",
                              labels=tuple(f"block {k}" for k in range(n)))


def load_coca_model(model: str, pretrained: str | None, device: str = "cpu", tower_only: bool = False) -> CocaModel:
    return CocaModel(load_coca(model, pretrained, device=device, tower_only=tower_only))
