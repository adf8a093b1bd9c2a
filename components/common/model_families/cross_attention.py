"""The hand-off of the cross-attention families (BLIP, VisionEncoderDecoder): a block's output
goes through the vision tower's own final norm (what the model applies after its last block,
kept in the tower's precision), then through a projection to the decoder's width where the
model has one, and the text decoder reads the result by cross-attention
(``encoder_hidden_states``). A family names its modules; the hand-off is written once, here."""

from __future__ import annotations

import torch

from .base import DecoderHandoff
from .hf_vision import HFVisionLanguageModel


class CrossAttentionCaptioner(HFVisionLanguageModel):
    """A Hugging Face captioner whose text decoder reads the vision tower by cross-attention."""

    # subclasses: the tower's final norm, the text decoder, and the projection between them (if any)
    def tower_final_norm(self) -> torch.nn.Module:
        raise NotImplementedError

    def text_decoder(self) -> torch.nn.Module:
        raise NotImplementedError

    def decoder_projection(self) -> torch.nn.Module | None:
        return None

    def decoder_handoff(self) -> DecoderHandoff:
        """Split after the tower's final norm (the first per-token normalisation, where grounding
        maps are taken), before the projection where the model has one."""
        norm = self.tower_final_norm()
        projection = self.decoder_projection()

        def rest(x: torch.Tensor) -> torch.Tensor:
            return projection(x.to(projection.weight.dtype)) if projection is not None else x

        return DecoderHandoff(lambda block_tokens: norm(block_tokens.to(norm.weight.dtype)), rest, self.patch_grid())

    def decoder_inputs(self, block_tokens: torch.Tensor) -> torch.Tensor:
        handoff = self.decoder_handoff()
        return handoff.rest(handoff.normalise(block_tokens))

    def decoder_modules(self) -> list[torch.nn.Module]:
        """What decoding runs (cast to the decoding precision): the text decoder and the projection;
        not the vision tower, nor its final norm, which the tower's own forward also runs."""
        projection = self.decoder_projection()
        return [self.text_decoder()] + ([projection] if projection is not None else [])
