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

from .base import VISION_ENCODER_DECODER, DecoderHandoff, LayerNumbering
from .hf_vision import HFVisionLanguageModel

ENCODERS_WITH_FINAL_NORM = ("vit", "deit")  # hidden_states of one shape, final ``layernorm`` after the last block


class VisionEncoderDecoderCaptioner(HFVisionLanguageModel):
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

    def decoder_inputs(self, block_tokens: torch.Tensor) -> torch.Tensor:
        norm = self.model.encoder.layernorm   # the encoder's own: it keeps the encoder's precision
        states = norm(block_tokens.to(norm.weight.dtype))
        projection = getattr(self.model, "enc_to_dec_proj", None)
        return projection(states.to(projection.weight.dtype)) if projection is not None else states

    def decoder_handoff(self) -> DecoderHandoff:
        """Split after the encoder's ``layernorm``, before ``enc_to_dec_proj`` (where there is one)."""
        norm = self.model.encoder.layernorm
        projection = getattr(self.model, "enc_to_dec_proj", None)

        def rest(x: torch.Tensor) -> torch.Tensor:
            return projection(x.to(projection.weight.dtype)) if projection is not None else x

        return DecoderHandoff(lambda block_tokens: norm(block_tokens.to(norm.weight.dtype)), rest, self.patch_grid())

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

    def decoder_modules(self) -> list[torch.nn.Module]:
        """What decoding runs (cast to the decoding precision); the vision tower is not among them, nor
        its final ``layernorm``, which the encoder's own forward also runs."""
        projection = getattr(self.model, "enc_to_dec_proj", None)
        return [self.model.decoder] + ([projection] if projection is not None else [])

    def layer_numbering(self) -> LayerNumbering:
        return self.numbering("encoder.encoder.layer[k]", "layer {k}", self.n_layers - 1)
