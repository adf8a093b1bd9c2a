"""Model families behind one interface (``base.VisionLanguageModel``): open_clip CoCa and the
Hugging Face captioners BLIP, VisionEncoderDecoder and LLaVA. ``load_model`` picks the
family from the name (CoCa architectures and ``tiny-random``) or from the checkpoint's
``config.json`` (everything else)."""

from __future__ import annotations

from .base import BLIP, COCA, FAMILIES, LLAVA, VISION_ENCODER_DECODER, LayerNumbering, VisionLanguageModel
from .hf_loading import TINY_RANDOM_HF, is_hf_model
from .hub_revision import pin_names

MODEL_HELP = ("the model: an open_clip CoCa architecture (coca_ViT-L-14 as in the study, coca_ViT-B-32, ...; "
              "tiny-random offline), a Hugging Face captioner (BLIP, VisionEncoderDecoder, LLaVA) as hf:ORG/NAME[@REVISION], a local "
              "model folder or an s3:// prefix of one, or tiny-random-blip / tiny-random-vit-gpt2 / tiny-random-llava (offline)")
PRETRAINED_HELP = ("CoCa: an open_clip pretrained tag (default: the study's mscoco_finetuned_laion2B-s13B-b90k), a local "
                   "checkpoint file/folder or s3:// object; Hugging Face models: empty (the model itself) or a local "
                   "folder / s3:// prefix holding it; 'random': random weights of the architecture")

__all__ = ["MODEL_HELP", "PRETRAINED_HELP", "BLIP", "COCA", "FAMILIES", "LLAVA", "VISION_ENCODER_DECODER", "LayerNumbering", "VisionLanguageModel",
           "TINY_RANDOM_HF", "check_model_name", "is_hf_model", "load_model", "model_n_layers"]


def load_model(model: str, pretrained: str | None = None, device: str = "cpu", pins: dict | None = None) -> VisionLanguageModel:
    """The model named ``model`` (weights from ``pretrained`` where given), in eval mode on ``device``.
    A hub model is read at one commit, and its name (``loaded.name`` or ``loaded.pretrained``) says
    which: ``hf:ORG/NAME@<sha>``, from ``pins`` (a preflight's ``resolved-models.json``) or the hub."""
    if not is_hf_model(model):
        from .coca import load_coca_model

        return load_coca_model(model, pretrained, device=device)
    return _load_hf(*pin_names(model, pretrained, pins)).to_device(device)


def _load_hf(model: str, pretrained: str | None) -> VisionLanguageModel:
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    from . import hf_loading as hf

    source = hf.resolve_source(model, pretrained)
    config = hf.read_config(source)
    family = hf.family_of(config)
    weights = hf.RANDOM if source.random_weights else (pretrained or model)
    tokenizer = hf.load_pretrained_part(AutoTokenizer, source, "tokenizer")
    image_processor = hf.load_pretrained_part(AutoImageProcessor, source, "image processor")
    if family == BLIP:
        from transformers import BlipForConditionalGeneration

        from .blip import BlipModel

        net = hf.load_hf_model(BlipForConditionalGeneration, source, config)
        return BlipModel(net, model, weights, tokenizer, image_processor, source)
    if family == VISION_ENCODER_DECODER:
        from transformers import VisionEncoderDecoderModel

        from .vision_encoder_decoder import VisionEncoderDecoderCaptioner

        net = hf.load_hf_model(VisionEncoderDecoderModel, source, config)
        return VisionEncoderDecoderCaptioner(net, model, weights, tokenizer, image_processor, source)
    from transformers import LlavaForConditionalGeneration

    from .llava import LlavaModel

    processor = hf.load_pretrained_part(AutoProcessor, source, "processor")
    net = hf.load_hf_model(LlavaForConditionalGeneration, source, config)
    return LlavaModel(net, model, weights, processor.tokenizer, processor.image_processor, source, processor=processor)


def model_n_layers(model: str, pretrained: str | None = None, pins: dict | None = None) -> int:
    """Blocks of the model's vision encoder, from its config alone (no weights loaded; a hub model's at
    its pinned commit)."""
    if not is_hf_model(model):
        from ..models import coca_n_layers

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
