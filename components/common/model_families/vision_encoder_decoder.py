"""Encoder-decoder captioners (``VisionEncoderDecoderModel``, e.g. ViT + GPT-2).

Decoder input of block ``k``: the encoder's ``hidden_states[k + 1]`` through the encoder's
final norm (``layernorm`` of ViT and DeiT, which the model applies after its last block),
then ``enc_to_dec_proj`` where the model has one (encoder and decoder widths differ), as
``encoder_hidden_states`` of the decoder's cross-attention. Decoding starts from
the generation config's ``decoder_start_token_id`` and ends at any of its ``eos_token_id``, as the
model's ``generate`` does.
"""

from __future__ import annotations

import torch

from .base import VISION_ENCODER_DECODER, LayerNumbering
from .cross_attention import CrossAttentionCaptioner

ENCODERS_WITH_FINAL_NORM = ("vit", "deit")  # hidden_states of one shape, final ``layernorm`` after the last block


class VisionEncoderDecoderCaptioner(CrossAttentionCaptioner):
    family = VISION_ENCODER_DECODER

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        encoder_type = self.model.config.encoder.model_type
        if encoder_type not in ENCODERS_WITH_FINAL_NORM:
            raise ValueError(f"{self.name}: encoder type {encoder_type!r} is not supported (its per-layer outputs or "
                             f"final norm differ); supported encoders: {', '.join(ENCODERS_WITH_FINAL_NORM)}")

    def vision_tower(self) -> torch.nn.Module:
        return self.model.encoder

    @property
    def vision_config(self):
        return self.model.config.encoder

    def tower_final_norm(self) -> torch.nn.Module:
        return self.model.encoder.layernorm

    def decoder_projection(self) -> torch.nn.Module | None:
        return getattr(self.model, "enc_to_dec_proj", None)   # where encoder and decoder widths differ


    @property
    def start_token_id(self) -> int:
        """As ``generate`` takes it: the generation config's ``decoder_start_token_id``, else its
        ``bos_token_id``; the model config's ``decoder_start_token_id`` where neither is set."""
        generation = self.model.generation_config
        for start in (generation.decoder_start_token_id, generation.bos_token_id,
                      self.model.config.decoder_start_token_id):
            if start is not None:
                return start[0] if isinstance(start, (list, tuple)) else start
        raise ValueError(f"{self.name}: no decoder_start_token_id in its generation config or config; "
                         "decoding has no start token")

    @property
    def end_token_ids(self) -> tuple[int, ...]:
        return self.generation_end_tokens(self.model.config.decoder)

    def text_decoder(self) -> torch.nn.Module:
        return self.model.decoder

    def layer_numbering(self) -> LayerNumbering:
        return self.numbering("encoder.encoder.layer[k]", "layer {k}", self.n_layers - 1)
