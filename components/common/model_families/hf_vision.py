"""The parts of a Hugging Face family adapter that every family shares: the image
processor as the transform, and block outputs taken from the vision encoder's own
``hidden_states`` (entry ``k + 1`` is block ``k``'s output; entry 0 is the embeddings)."""

from __future__ import annotations

import torch

from .base import LayerNumbering, VisionLanguageModel


class HFVisionLanguageModel(VisionLanguageModel):
    """A Hugging Face model whose vision encoder returns ``hidden_states``."""

    def __init__(self, model, name, pretrained, tokenizer, image_processor, source):
        super().__init__(model, name, pretrained, tokenizer)
        self.image_processor = image_processor
        self.source = source

    # subclasses: the encoder module and its config
    def vision_tower(self) -> torch.nn.Module:
        raise NotImplementedError

    @property
    def vision_config(self):
        raise NotImplementedError

    @property
    def n_layers(self) -> int:
        return self.vision_config.num_hidden_layers

    @property
    def image_size(self) -> int:
        size = self.vision_config.image_size
        return max(size) if isinstance(size, (tuple, list)) else size

    def feature_shape(self) -> tuple[int, int]:
        with torch.no_grad():
            tower = self.vision_tower()
            param = next(tower.parameters())
            side = self.image_size
            probe = torch.zeros(1, 3, side, side, dtype=param.dtype, device=param.device)
            hidden = tower(pixel_values=probe, output_hidden_states=True).hidden_states[1]
        return hidden.shape[1], hidden.shape[2]

    def patch_grid(self) -> tuple[int, int]:
        """The vision encoder's patch grid (rows, cols), from its config's image and patch sizes."""
        config = self.vision_config
        size, patch = config.image_size, config.patch_size
        (height, width), (ph, pw) = ((s, s) if isinstance(s, int) else tuple(s) for s in (size, patch))
        return height // ph, width // pw

    def preprocess(self, image) -> torch.Tensor:
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    @torch.no_grad()
    def vision_block_outputs(self, pixels: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        hidden = self.vision_tower()(pixel_values=pixels, output_hidden_states=True).hidden_states
        return [hidden[k + 1] for k in layers]

    @property
    def generation_config(self):
        """The generation config the model's own ``generate`` reads (BLIP: its text decoder's)."""
        return self.model.generation_config

    def generation_end_tokens(self, text_config) -> tuple[int, ...]:
        """Every end token of the model's own ``generate``, in the order given: its generation config's,
        else ``text_config``'s. Llama-3- and Qwen2-based conversions list several (end of text, end of
        turn, ...); ``generate`` bans all of them below the minimum length and stops at any."""
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = text_config.eos_token_id
        if eos is None:
            raise ValueError(f"{self.name}: neither its generation config nor its text config names an end token "
                             "(eos_token_id); captions could not end")
        return tuple(dict.fromkeys(eos)) if isinstance(eos, (list, tuple)) else (eos,)

    @property
    def eos_token_id(self) -> int:
        """The end token forced at ``seq_len``: the first listed, the model's primary one (the text's end;
        the study's rule forces CoCa's single end token there)."""
        return self.end_token_ids[0]

    @property
    def end_token_ids(self) -> tuple[int, ...]:
        raise NotImplementedError

    def caption_text(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True).strip()

    def numbering(self, scheme: str, label: str, normal_layer: int) -> LayerNumbering:
        n = self.n_layers
        return LayerNumbering(n_layers=n, normal_layer=normal_layer, scheme=scheme,
                              labels=tuple(label.format(k=k, hidden=k + 1) for k in range(n)))
