"""Cached decoders of the Hugging Face families, driven by the shared greedy loop (``greedy.py``).

Each step runs the model's own text decoder with the model's own KV cache (transformers'
``Cache``: one new token per step; cross-attention keys/values of the image computed on
the first step and kept), batched across images and layers, with finished rows dropped
from the cache (``Cache.reorder_cache``) as the loop compacts.

- ``CrossAttentionDecoder`` (BLIP, VisionEncoderDecoder): the decoder input is the image's
  token states, read by the text decoder's cross-attention (``encoder_hidden_states``).
- ``PromptDecoder`` (LLaVA): the decoder input is the projected image tokens, placed where
  the model's own chat prompt holds its image tokens; the whole prompt is the prefix (one
  forward fills the cache), and the caption starts after it.

The modules decoding uses (``decoder_modules()`` of the family) are cast in place to the
decoding precision; the vision tower is left as it is, its final norm included (the decoder
input of BLIP and VisionEncoderDecoder runs it, in the tower's precision, and is cast after).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union, cast

import torch

from ..common.memory_budget import config_kv_bytes_per_token, itemsize, logits_bytes
from ..common.model_families import LLAVA, VisionLanguageModel
from ..common.model_families.hf_cache_kwarg import cache_kwarg, cache_of
from ..common.precision import parse_dtype, torch_dtype
from .generation_settings import logits_rules
from .greedy import DecodedCaptions, GreedySettings, greedy_decode

if TYPE_CHECKING:
    from ..common.model_families.blip import BlipModel
    from ..common.model_families.llava import LlavaModel
    from ..common.model_families.vision_encoder_decoder import VisionEncoderDecoderCaptioner

# The families whose decoder reads the image by cross-attention; LLaVA reads it in its prompt.
CrossAttentionModel = Union["BlipModel", "VisionEncoderDecoderCaptioner"]


@dataclass
class HFDecodeState:
    """One batch's cache, and the image states the cross-attention reads (None for LLaVA)."""

    cache: Any = None   # the model's Cache (transformers), None before the first forward
    encoder_states: torch.Tensor | None = None

    def keep_rows(self, rows: torch.Tensor) -> None:
        self.cache.reorder_cache(rows)
        if self.encoder_states is not None:
            self.encoder_states = self.encoder_states.index_select(0, rows)


class HFCachedDecoder:
    """What both kinds share: precision, settings, and ``image_embeddings`` (block output ->
    the decoder's input) under the name the caption step uses for every family."""

    def __init__(self, loaded: CrossAttentionModel | LlavaModel, precision: str, settings: GreedySettings, modules,
                 prefix_ids: Sequence[int] = ()):
        self.loaded = loaded
        self.precision = parse_dtype(precision, ("float32", "bfloat16"), what="--precision")
        self.dtype = torch_dtype(self.precision)
        self.settings = settings
        self.prefix_ids = list(prefix_ids)
        self.logits_rules = self._logits_rules("cpu")
        for module in modules:
            module.to(self.dtype).requires_grad_(False)

    def _logits_rules(self, device):
        """The model's generation config as greedy decoding honours it (None: nothing to apply)."""
        return logits_rules(self.loaded.name, self.loaded.generation_config, self.settings.end_token_ids,
                            self.prefix_ids, device)

    def generation_settings(self) -> dict:
        """The generation config's settings the captions were decoded with (name -> value)."""
        return dict(self.logits_rules.applied) if self.logits_rules else {}

    def text_config(self):
        """The language model's config (layers, heads, hidden size)."""
        raise NotImplementedError

    def prefix_tokens(self, n_image_tokens: int) -> int:
        """Tokens each row's cache holds before the caption's first."""
        raise NotImplementedError

    @torch.no_grad()
    def image_embeddings(self, block_tokens: torch.Tensor) -> torch.Tensor:
        return self.loaded.decoder_inputs(block_tokens).to(self.dtype)

    def handoff(self):
        """``image_embeddings`` split at the family's first per-token normalisation (grounding maps)."""
        return self.loaded.decoder_handoff()

    def bytes_per_row(self, n_image_tokens: int) -> int:
        """Device memory one decode row holds: the language model's KV cache over the prefix and
        the caption (keys and values of every layer), the image's states, and the step's logits,
        log-probs and probs in float32. For LLaVA the prefix holds the image tokens: hundreds
        per image, so this is what bounds the batch."""
        config = self.text_config()
        cached = self.prefix_tokens(n_image_tokens) + self.settings.seq_len
        image_states = itemsize(self.dtype) * n_image_tokens * config.hidden_size
        return config_kv_bytes_per_token(config, self.dtype) * cached + image_states + logits_bytes(config.vocab_size)

    def generate(self, decoder_inputs: torch.Tensor, compact_below: float = 0.5) -> DecodedCaptions:
        return greedy_decode(self, decoder_inputs, compact_below)

    def to(self, device: str) -> HFCachedDecoder:
        self.loaded.model.to(device)
        self.logits_rules = self._logits_rules(device)
        return self

    def caption_text(self, token_ids: list[int]) -> str:
        return self.loaded.caption_text(token_ids)


class CrossAttentionDecoder(HFCachedDecoder):
    """BLIP's text decoder, or a VisionEncoderDecoder's decoder, reading the image by cross-attention."""

    def __init__(self, loaded: CrossAttentionModel, precision: str = "float32", settings: GreedySettings | None = None):
        base = settings or GreedySettings()
        settings = GreedySettings(base.seq_len, base.min_seq_len, loaded.start_token_id, loaded.eos_token_id, None,
                                  loaded.end_token_ids[1:])
        self.decoder = loaded.text_decoder()
        self.cache_kwarg = cache_kwarg(self.decoder)
        context = getattr(self.decoder.config, "max_position_embeddings", None) or getattr(self.decoder.config, "n_positions")
        if settings.seq_len > context:
            raise ValueError(f"--seq-len {settings.seq_len} exceeds the text decoder's context of {context} tokens")
        super().__init__(loaded, precision, settings, loaded.decoder_modules())

    def text_config(self):
        return self.decoder.config

    def prefix_tokens(self, n_image_tokens: int) -> int:
        return n_image_tokens  # the cross-attention's keys/values of the image, per layer

    def _forward(self, tokens: torch.Tensor, state: HFDecodeState) -> torch.Tensor:
        output = self.decoder(input_ids=tokens[:, None], encoder_hidden_states=state.encoder_states,
                              use_cache=True, **{self.cache_kwarg: state.cache})
        state.cache = cache_of(output)
        return output.logits[:, -1].float()

    def start(self, decoder_inputs: torch.Tensor) -> tuple[HFDecodeState, torch.Tensor]:
        state = HFDecodeState(encoder_states=decoder_inputs.to(self.dtype))
        sot = torch.full((decoder_inputs.shape[0],), self.settings.sot_token_id, dtype=torch.long,
                         device=decoder_inputs.device)
        return state, self._forward(sot, state)

    def step(self, tokens: torch.Tensor, pos: int, state: HFDecodeState) -> torch.Tensor:
        return self._forward(tokens, state)

    def forced_logits(self, decoder_inputs: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[rows, T, vocab]`` (float32) after each of ``input_ids`` ``[rows, T]`` (the start
        token, then a caption's tokens), in one forward of the text decoder (teacher forcing, no
        cache). Differentiable in ``decoder_inputs``."""
        output = self.decoder(input_ids=input_ids, encoder_hidden_states=decoder_inputs.to(self.dtype), use_cache=False)
        return output.logits.float()


class PromptDecoder(HFCachedDecoder):
    """LLaVA: the chat prompt with the image tokens as the prefix, the caption after it."""

    def __init__(self, loaded: LlavaModel, precision: str = "float32", settings: GreedySettings | None = None):
        base = settings or GreedySettings()
        self.prompt_ids = loaded.prompt_ids()
        settings = GreedySettings(base.seq_len, base.min_seq_len, self.prompt_ids[-1], loaded.eos_token_id, None,
                                  loaded.end_token_ids[1:])
        model = loaded.model
        context = model.config.text_config.max_position_embeddings
        if len(self.prompt_ids) + settings.seq_len > context:
            raise ValueError(f"the prompt ({len(self.prompt_ids)} tokens with the image) and --seq-len "
                             f"{settings.seq_len} exceed the language model's context of {context} tokens")
        self.image_positions = [i for i, t in enumerate(self.prompt_ids) if t == loaded.image_token_id]
        super().__init__(loaded, precision, settings, loaded.decoder_modules(), prefix_ids=self.prompt_ids[:-1])
        self.model = model
        self.cache_kwarg = cache_kwarg(model)

    def text_config(self):
        return self.model.config.text_config

    def prefix_tokens(self, n_image_tokens: int) -> int:
        return len(self.prompt_ids)

    def start(self, decoder_inputs: torch.Tensor) -> tuple[HFDecodeState, torch.Tensor]:
        rows, n_image = decoder_inputs.shape[:2]
        if n_image != len(self.image_positions):
            raise ValueError(f"{n_image} image tokens per image, but the prompt holds {len(self.image_positions)}: "
                             "the features were made at another image size than the processor's")
        ids = torch.tensor(self.prompt_ids, device=decoder_inputs.device)
        embeds = self.model.get_input_embeddings()(ids)[None].expand(rows, -1, -1).clone()
        embeds[:, self.image_positions] = decoder_inputs.to(embeds.dtype)
        output = self.model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
        return HFDecodeState(cache=cache_of(output)), output.logits[:, -1].float()

    def forced_logits(self, decoder_inputs: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[rows, T, vocab]`` (float32) after each of ``input_ids`` ``[rows, T]`` (the prompt's
        last token, then a caption's tokens): the prompt with the image tokens, then the caption, in
        one forward (teacher forcing, no cache). Differentiable in ``decoder_inputs``."""
        rows, n = input_ids.shape
        prefix = torch.tensor(self.prompt_ids[:-1], device=input_ids.device).expand(rows, -1)
        embeds = self.model.get_input_embeddings()(torch.cat([prefix, input_ids], 1))
        embeds[:, self.image_positions] = decoder_inputs.to(embeds.dtype)
        output = self.model(inputs_embeds=embeds, use_cache=False, logits_to_keep=n)
        return output.logits.float()

    def step(self, tokens: torch.Tensor, pos: int, state: HFDecodeState) -> torch.Tensor:
        output = self.model(input_ids=tokens[:, None], use_cache=True, logits_to_keep=1,
                            **{self.cache_kwarg: state.cache})
        state.cache = cache_of(output)
        return output.logits[:, -1].float()


def hf_decoder(loaded: VisionLanguageModel, precision: str = "float32",
               settings: GreedySettings | None = None) -> HFCachedDecoder:
    """The cached decoder of a Hugging Face family."""
    if loaded.family == LLAVA:
        return PromptDecoder(cast("LlavaModel", loaded), precision, settings)
    return CrossAttentionDecoder(cast(CrossAttentionModel, loaded), precision, settings)
