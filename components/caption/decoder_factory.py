"""The cached decoder of a loaded model, whatever its family: open_clip CoCa's own
(``decoder.CachedCocaDecoder``) or the Hugging Face families' (``hf_decoders``). Every one
has ``image_embeddings(block_tokens)`` (a block's output -> the decoder's input),
``generate(inputs)`` (the shared greedy loop), ``bytes_per_row``, ``precision`` and ``to(device)``."""

from __future__ import annotations

from ..common.model_families import COCA, VisionLanguageModel
from .coca_decoder import CachedCocaDecoder
from .greedy import GreedySettings
from .hf_decoders import hf_decoder


def make_decoder(loaded: VisionLanguageModel, precision: str = "float32", settings: GreedySettings | None = None):
    if loaded.family == COCA:
        return CachedCocaDecoder(loaded.model, precision=precision, settings=settings)
    return hf_decoder(loaded, precision, settings)
