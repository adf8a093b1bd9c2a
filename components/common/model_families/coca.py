"""open_clip CoCa as a model family (the study's model; loading lives in ``coca_loading``)."""

from __future__ import annotations

import torch

from .base import COCA, DecoderHandoff, LayerNumbering, VisionLanguageModel
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

    def decoder_handoff(self) -> DecoderHandoff:
        visual = self.model.visual
        return coca_handoff(visual.attn_pool, visual.ln_post, tuple(visual.grid_size))

    def layer_numbering(self) -> LayerNumbering:
        n = self.n_layers
        return LayerNumbering(n_layers=n, normal_layer=n - 1, scheme="visual.transformer.resblocks[k]",
                              labels=tuple(f"block {k}" for k in range(n)))


def coca_handoff(attn_pool: torch.nn.Module, ln_post: torch.nn.Module, grid: tuple[int, int]) -> DecoderHandoff:
    """CoCa's hand-off, split after the attentional pooler's key/value norm ``ln_k``: then its
    attention (its queries through ``ln_q``), ``ln_post``, the first token dropped -- what
    ``attn_pool`` and ``ln_post`` do after the last block. Given the modules (the caption step's
    decoder holds copies of them in its precision)."""
    def normalise(block_tokens: torch.Tensor) -> torch.Tensor:
        return attn_pool.ln_k(block_tokens.to(attn_pool.ln_k.weight.dtype))

    def rest(x: torch.Tensor) -> torch.Tensor:
        queries = attn_pool.ln_q(attn_pool.query).unsqueeze(0).expand(x.shape[0], -1, -1)
        return ln_post(attn_pool.attn(queries, x, x, need_weights=False)[0])[:, 1:]

    return DecoderHandoff(normalise, rest, grid)


def load_coca_model(model: str, pretrained: str | None, device: str = "cpu", tower_only: bool = False) -> CocaModel:
    return CocaModel(load_coca(model, pretrained, device=device, tower_only=tower_only))
