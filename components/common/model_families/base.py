"""What every model family gives the pipeline: the vision tower's per-layer features, and
what the caption step needs to decode from them.

A family adapter holds a loaded model and answers:

- ``preprocess(image)``: the model's own eval transform (PIL image -> ``[3, H, W]``);
- ``vision_block_outputs(pixels, layers)``: the outputs ``[n, tokens, width]`` of the
  selected blocks of the vision encoder (0-based block index: block ``k`` is the model's
  ``hidden_states[k + 1]`` in Hugging Face terms, ``resblocks[k]`` in open_clip's);
- ``layer_numbering()``: how the model itself names those blocks, and which one it
  normally captions from;
- ``decoder_handoff()``: what a block's output becomes on its way to the text decoder, split
  at the family's first per-token normalisation (where grounding maps are taken);
- the decoder side (what a block's output becomes as the text decoder's input, and the
  decoder itself) is built by the caption step from ``model`` and ``family``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch

from ..contracts import FAMILY_BLIP as BLIP
from ..contracts import FAMILY_COCA as COCA
from ..contracts import FAMILY_LLAVA as LLAVA
from ..contracts import FAMILY_VISION_ENCODER_DECODER as VISION_ENCODER_DECODER
from ..contracts import LAYER_NUMBERING_KEY, MODEL_FAMILY_KEY

FAMILIES = (COCA, BLIP, VISION_ENCODER_DECODER, LLAVA)


@dataclass(frozen=True)
class LayerNumbering:
    """How a model numbers the blocks we caption from (recorded in features, captions, reports).

    ``labels[k]`` is the model's own name for 0-based block ``k``; ``normal_layer`` is the
    block the model's own captioning reads; relative depth of block ``k`` is ``(k + 1) / n_layers``.
    """

    n_layers: int
    normal_layer: int
    scheme: str
    labels: tuple[str, ...]

    def to_json(self) -> dict:
        return dict(asdict(self), labels=list(self.labels))


@dataclass(frozen=True)
class DecoderHandoff:
    """A block's output ``H_k`` on its way to the text decoder, in two halves.

    ``normalise(H_k)`` is ``X_k``: the tokens just after the family's first per-token normalisation
    (CoCa ``attn_pool.ln_k``, BLIP ``post_layernorm``, VisionEncoderDecoder ``encoder.layernorm``;
    LLaVA none: its projector reads ``H_k`` itself). ``rest(X_k)`` is the decoder's input, what
    captioning decodes from. Grounding maps are gradient x input at ``X_k`` (``caption.grounding``).

    ``grid``: the encoder's patch grid ``(rows, cols)``; the patch tokens are the last
    ``rows * cols`` tokens of ``X_k`` (the extra ones, CLS and the like, come first in every
    supported encoder).
    """

    normalise: Callable[[torch.Tensor], torch.Tensor]
    rest: Callable[[torch.Tensor], torch.Tensor]
    grid: tuple[int, int]

    @property
    def n_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def patches(self, per_token: torch.Tensor) -> torch.Tensor:
        """The patch tokens' entries of ``per_token`` ``[n, tokens, ...]``, row-major over the grid."""
        if per_token.shape[1] < self.n_patches:
            raise ValueError(f"{per_token.shape[1]} tokens per image, fewer than the {self.grid[0]}x{self.grid[1]} "
                             "patch grid: the features were made at another image size than the model's")
        return per_token[:, per_token.shape[1] - self.n_patches:]


class VisionLanguageModel:
    """A loaded model of one family (subclasses fill in the family's parts)."""

    family: str = ""
    vision_only: bool = False   # loaded for extract: only the vision tower holds weights (load_model part="vision")

    def __init__(self, model: torch.nn.Module, name: str, pretrained: str, tokenizer):
        self.model = model
        self.name = name                 # the model as given (tiny-random-coca, hf:ORG/NAME, a folder, s3://...)
        self.pretrained = pretrained     # the weights as given ("random" for random init)
        self.tokenizer = tokenizer

    @property
    def n_layers(self) -> int:
        raise NotImplementedError

    @property
    def image_size(self) -> int:
        """Side of the square image the transform makes (decoding can shrink large images to about this first)."""
        raise NotImplementedError

    def feature_shape(self) -> tuple[int, int]:
        """(tokens, width) of one block's output for one image."""
        raise NotImplementedError

    def preprocess(self, image) -> torch.Tensor:
        raise NotImplementedError

    def vision_block_outputs(self, pixels: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        raise NotImplementedError

    def layer_numbering(self) -> LayerNumbering:
        raise NotImplementedError

    def decoder_handoff(self) -> DecoderHandoff:
        """Block output -> decoder input, split at the family's first per-token normalisation."""
        raise NotImplementedError

    def caption_text(self, token_ids: list[int]) -> str:
        """The caption's text from its generated ids (the ending token and special tokens left out)."""
        raise NotImplementedError

    def vision_tower(self) -> torch.nn.Module:
        """The module the extract step moves to the device and runs."""
        raise NotImplementedError

    def to_device(self, device: str) -> "VisionLanguageModel":
        (self.vision_tower() if self.vision_only else self.model).to(device)
        return self

    def identity(self) -> dict:
        """What features, captions and provenance record about the model."""
        return {"model": self.name, "pretrained": self.pretrained, MODEL_FAMILY_KEY: self.family,
                LAYER_NUMBERING_KEY: self.layer_numbering().to_json()}
