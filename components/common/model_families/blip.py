"""BLIP captioning (``BlipForConditionalGeneration``).

Decoder input of block ``k``: the vision model's ``hidden_states[k + 1]`` through the vision
model's final ``post_layernorm`` -- what BLIP's own ``generate`` feeds the text decoder's
cross-attention after the last block (as CoCa's ``ln_post`` is used for every block).
Decoding starts from the text config's ``bos_token_id`` ([DEC]) and ends at its
``sep_token_id``, as ``BlipForConditionalGeneration.generate`` does.
"""

from __future__ import annotations

import torch

from .base import BLIP, LayerNumbering
from .cross_attention import CrossAttentionCaptioner


class BlipModel(CrossAttentionCaptioner):
    family = BLIP

    def vision_tower(self) -> torch.nn.Module:
        return self.model.vision_model

    @property
    def vision_config(self):
        return self.model.config.vision_config

    def tower_final_norm(self) -> torch.nn.Module:
        return self.model.vision_model.post_layernorm


    @property
    def start_token_id(self) -> int:
        return self.model.config.text_config.bos_token_id

    @property
    def end_token_ids(self) -> tuple[int, ...]:
        return (self.model.config.text_config.sep_token_id,)   # what BLIP's generate passes as eos_token_id

    @property
    def generation_config(self):
        return self.model.text_decoder.generation_config     # BLIP's generate runs its text decoder's

    def text_decoder(self) -> torch.nn.Module:
        return self.model.text_decoder

    def layer_numbering(self) -> LayerNumbering:
        return self.numbering("vision_model.encoder.layers[k]", "layer {k}", self.n_layers - 1)
