"""LLaVA-style models (``LlavaForConditionalGeneration``).

Decoder input of block ``k``: the vision tower's ``hidden_states[k + 1]`` (the model's own
``vision_feature_layer = k + 1``; its default -2 is the second-to-last block), with the
CLS token dropped under the ``default`` feature-select strategy, through the model's own
``multi_modal_projector``: the image tokens of the model's own chat prompt, built by its
processor from the fixed, recorded ``PROMPT``. So captioning every block is sweeping
``vision_feature_layer`` over every layer. Decoding starts after the prompt and ends at any of
the generation config's end tokens.
"""

from __future__ import annotations

import torch

from .base import LLAVA, DecoderHandoff, LayerNumbering
from .hf_vision import HFVisionLanguageModel

PROMPT = "Describe the image in one sentence."


class LlavaModel(HFVisionLanguageModel):
    family = LLAVA

    def __init__(self, *args, processor, **kwargs):
        super().__init__(*args, **kwargs)
        self.processor = processor
        layer = self.model.config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(f"{self.name}: vision_feature_layer {layer} concatenates several layers; only models that "
                             "read one layer are supported")
        strategy = self.model.config.vision_feature_select_strategy
        if strategy not in ("default", "full"):
            raise ValueError(f"{self.name}: vision_feature_select_strategy {strategy!r} is not supported")

    def vision_tower(self) -> torch.nn.Module:
        return self.model.model.vision_tower

    @property
    def vision_config(self):
        return self.model.config.vision_config

    def decoder_inputs(self, block_tokens: torch.Tensor) -> torch.Tensor:
        if self.model.config.vision_feature_select_strategy == "default":
            block_tokens = block_tokens[:, 1:]
        projector = self.model.model.multi_modal_projector
        return projector(block_tokens.to(next(projector.parameters()).dtype))

    def decoder_handoff(self) -> DecoderHandoff:
        """No per-token normalisation before the projector: ``X_k`` is ``H_k`` itself; the rest is
        ``decoder_inputs`` (the CLS token dropped under ``default``, the projector)."""
        return DecoderHandoff(lambda block_tokens: block_tokens, self.decoder_inputs, self.patch_grid())

    def decoder_modules(self) -> list[torch.nn.Module]:
        """What decoding runs (cast to the decoding precision); the vision tower is not among them."""
        return [self.model.model.multi_modal_projector, self.model.model.language_model, self.model.lm_head]

    def prompt_ids(self) -> list[int]:
        """The chat prompt's token ids with the image placeholder expanded to the image's tokens."""
        from PIL import Image

        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
        text = self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        side = self.image_size
        encoded = self.processor(images=Image.new("RGB", (side, side)), text=text, return_tensors="pt")
        return encoded["input_ids"][0].tolist()

    @property
    def image_token_id(self) -> int:
        return self.model.config.image_token_id

    @property
    def end_token_ids(self) -> tuple[int, ...]:
        return self.generation_end_tokens(self.model.config.text_config)

    def layer_numbering(self) -> LayerNumbering:
        n1 = self.n_layers + 1
        normal = self.model.config.vision_feature_layer % n1 - 1
        return self.numbering("vision_tower hidden_states[k + 1] (vision_feature_layer)", "vision_feature_layer {hidden}",
                              normal)
