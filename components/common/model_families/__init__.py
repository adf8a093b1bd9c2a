"""Model families behind one interface (``base.VisionLanguageModel``): open_clip CoCa and the
Hugging Face captioners BLIP, VisionEncoderDecoder and LLaVA. ``load_model`` picks the
family from the name (CoCa architectures and ``tiny-random-coca``) or from the checkpoint's
``config.json`` (everything else)."""

from __future__ import annotations

from .base import (
    BLIP,
    COCA,
    FAMILIES,
    LLAVA,
    VISION_ENCODER_DECODER,
    DecoderHandoff,
    LayerNumbering,
    VisionLanguageModel,
)
from .hf_loading import TINY_RANDOM_HF, is_hf_model
from .hub_revision import pin_names

STUDY_MODEL = "coca_ViT-L-14"  # the study's model: the default wherever a model is chosen
MODEL_HELP = ("the model (default coca_ViT-L-14, the study's): an open_clip CoCa architecture (coca_ViT-B-32, ...; "
              "tiny-random-coca: random weights, offline), a Hugging Face captioner (BLIP, VisionEncoderDecoder, LLaVA) as hf:ORG/NAME[@REVISION], a local "
              "model folder or an s3:// prefix of one, or tiny-random-blip / tiny-random-vit-gpt2 / tiny-random-llava (offline)")
PRETRAINED_HELP = ("CoCa: an open_clip pretrained tag (default: the study's mscoco_finetuned_laion2B-s13B-b90k), a local "
                   "checkpoint file/folder or s3:// object; Hugging Face models: empty (the model itself) or a local "
                   "folder / s3:// prefix holding it; 'random': random weights of the architecture")

WHOLE = "all"        # load_model part: the whole model (caption, interpret)
VISION = "vision"    # load_model part: the vision tower alone, the rest left unloaded (extract)
PARTS = (WHOLE, VISION)

__all__ = ["MODEL_HELP", "PARTS", "VISION", "WHOLE", "PRETRAINED_HELP", "BLIP", "COCA", "DecoderHandoff", "FAMILIES", "LLAVA",
           "VISION_ENCODER_DECODER", "LayerNumbering", "VisionLanguageModel", "STUDY_MODEL", "TINY_RANDOM_HF",
           "check_model_name", "is_hf_model", "load_model", "model_n_layers"]


def load_model(model: str, pretrained: str | None = None, device: str = "cpu", part: str = WHOLE,
               pins: dict | None = None) -> VisionLanguageModel:
    """The model named ``model`` (weights from ``pretrained`` where given), in eval mode on ``device``.

    ``part``: ``all``, or ``vision`` for what the extract step runs: a Hugging Face model's vision
    tower alone is read from its safetensors (same float32 weights as the whole model's, the
    rest never loaded: ``vision_only``); only ``vision_tower()``, ``preprocess``,
    ``vision_block_outputs`` and what the config tells may then be used. CoCa likewise reads
    only ``visual`` from a safetensors checkpoint (``coca_loading.load_coca``).

    A hub model is read at one commit, and its name (``loaded.name`` or ``loaded.pretrained``) says
    which: ``hf:ORG/NAME@<sha>``, from ``pins`` (a preflight's ``resolved-models.json``) or the hub."""
    if part not in PARTS:
        raise ValueError(f"part {part!r}: give one of {', '.join(PARTS)}")
    if not is_hf_model(model):
        from .coca import load_coca_model

        loaded = load_coca_model(model, pretrained, tower_only=part == VISION)
        loaded.vision_only = part == VISION  # only the tower goes to the device (random weights: made whole, tiny)
        return loaded.to_device(device)
    return _load_hf(*pin_names(model, pretrained, pins), part).to_device(device)


def _load_hf(model: str, pretrained: str | None, part: str = WHOLE) -> VisionLanguageModel:
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    from . import hf_loading as hf

    source = hf.resolve_source(model, pretrained)
    config = hf.read_config(source)
    family = hf.family_of(config)
    weights = hf.RANDOM if source.random_weights else (pretrained or model)
    tokenizer = hf.load_pretrained_part(AutoTokenizer, source, "tokenizer")
    image_processor = hf.load_pretrained_part(AutoImageProcessor, source, "image processor")

    def load(model_class):
        net = None
        if part == VISION and not source.random_weights:  # random weights: made for the whole model (tiny), then cut
            from .vision_only import load_vision_tower_only

            net = load_vision_tower_only(model_class, source, config, family)
        return net if net is not None else hf.load_hf_model(model_class, source, config)

    if family == BLIP:
        from transformers import BlipForConditionalGeneration

        from .blip import BlipModel

        adapter: VisionLanguageModel = BlipModel(load(BlipForConditionalGeneration), model, weights, tokenizer, image_processor, source)
    elif family == VISION_ENCODER_DECODER:
        from transformers import VisionEncoderDecoderModel

        from .vision_encoder_decoder import VisionEncoderDecoderCaptioner

        adapter = VisionEncoderDecoderCaptioner(load(VisionEncoderDecoderModel), model, weights, tokenizer,
                                                image_processor, source)
    else:
        from transformers import LlavaForConditionalGeneration

        from .llava import LlavaModel

        processor = hf.load_pretrained_part(AutoProcessor, source, "processor")
        adapter = LlavaModel(load(LlavaForConditionalGeneration), model, weights, processor.tokenizer,
                             processor.image_processor, source, processor=processor)
    adapter.vision_only = part == VISION
    return adapter


def model_n_layers(model: str, pretrained: str | None = None, pins: dict | None = None) -> int:
    """Blocks of the model's vision encoder, from its config alone (no weights loaded; a hub model's at
    its pinned commit)."""
    if not is_hf_model(model):
        from .coca_loading import coca_n_layers

        return coca_n_layers(model)
    from . import hf_loading as hf

    model, pretrained = pin_names(model, pretrained, pins)
    config = hf.read_config(hf.resolve_source(model, pretrained, config_only=True))
    family = hf.family_of(config)
    vision = config.encoder if family == VISION_ENCODER_DECODER else config.vision_config
    return vision.num_hidden_layers


def check_model_name(model: str, pretrained: str | None = None) -> None:
    """An error naming the fix when ``model`` is neither a CoCa architecture nor a supported checkpoint."""
    model_n_layers(model, pretrained)
