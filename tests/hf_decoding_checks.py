"""Checks of the Hugging Face families' cached decoders against the plain reference loop
(tests/hf_reference_loop.py) and the model's own ``generate``, shared by the caption tests."""

from __future__ import annotations

import pytest
import torch

from latent_verbalizer.components.caption.decoder_factory import make_decoder
from latent_verbalizer.components.caption.greedy import GreedySettings
from latent_verbalizer.components.common.model_families import LLAVA
from tests import hf_reference_loop as ref
from tests.images import skimage_photo_paths


def llava_prompt_ids(loaded) -> list[int]:
    """The prompt as the model's own processor builds it (chat template, image placeholder expanded)."""
    from PIL import Image

    from latent_verbalizer.components.common.model_families.llava import PROMPT

    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = loaded.processor.apply_chat_template(conversation, add_generation_prompt=True)
    image = Image.open(skimage_photo_paths()[0]).convert("RGB")
    return loaded.processor(images=image, text=text, return_tensors="pt")["input_ids"][0].tolist()


def reference_rows(loaded, inputs, settings: GreedySettings) -> list[ref.ReferenceRow]:
    """The reference loop's captions (tests/hf_reference_loop.py) of ``inputs`` for the loaded family."""
    model = loaded.model
    if loaded.family == LLAVA:
        prompt = llava_prompt_ids(loaded)
        next_logits, start = ref.llava_logits(model, prompt, inputs), prompt[-1]
    elif loaded.family == "hf-blip":
        next_logits, start = ref.blip_logits(model, inputs), model.config.text_config.bos_token_id
    else:
        next_logits, start = ref.vision_encoder_decoder_logits(model, inputs), model.config.decoder_start_token_id
    return ref.reference_greedy(next_logits, inputs.shape[0], start, models_own_end_tokens(loaded),
                                settings.seq_len, settings.min_seq_len)


def assert_same_as_reference(loaded, inputs, settings=GreedySettings(), compact_below=0.5):
    """Our cached decoder's captions equal the reference loop's, row by row; returns ours."""
    ours = make_decoder(loaded, "float32", settings).generate(inputs, compact_below)
    for i, row in enumerate(reference_rows(loaded, inputs, settings)):
        assert ours.token_ids[i] == row.token_ids, f"row {i}"
        assert ours.stop[i] == row.stop, f"row {i}"
        assert ours.entropy_bits[i] == pytest.approx(row.entropy_bits, abs=1e-4), f"row {i}"
        assert ours.mean_logprob[i] == pytest.approx(row.mean_logprob, abs=1e-4), f"row {i}"
    return ours


def models_own_end_tokens(loaded) -> list[int]:
    """The end tokens the model's own ``generate`` stops at, read from its configs (not from the adapter)."""
    model = loaded.model
    if loaded.family == "hf-blip":
        return [model.config.text_config.sep_token_id]       # BlipForConditionalGeneration.generate's eos
    eos = model.generation_config.eos_token_id
    return list(eos) if isinstance(eos, list) else [eos]


def models_own_end_token(loaded) -> int:
    """The first of them: the one the tests force at ``seq_len``."""
    return models_own_end_tokens(loaded)[0]


def own_generate(loaded, pixels, settings: GreedySettings) -> list[list[int]]:
    """The model's own greedy ``generate`` with the same length rules, cut after the first end token.
    The end tokens, and any other setting of its generation config, are the model's own (not passed)."""
    model, ends = loaded.model, models_own_end_tokens(loaded)
    with torch.no_grad():
        if loaded.family == LLAVA:
            prompt = llava_prompt_ids(loaded)
            ids = torch.tensor([prompt] * len(pixels))
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels,
                                 max_new_tokens=settings.seq_len - 1, min_new_tokens=settings.min_seq_len - 1,
                                 forced_eos_token_id=ends[0], pad_token_id=ends[0], do_sample=False, num_beams=1)
            rows = [r[len(prompt):].tolist() for r in out]
        else:
            out = model.generate(pixel_values=pixels, max_length=settings.seq_len, min_length=settings.min_seq_len,
                                 forced_eos_token_id=ends[0], do_sample=False, num_beams=1)
            rows = [r[1:].tolist() for r in out]
    cut = []
    for r in rows:
        at = [i for i, t in enumerate(r) if t in ends]
        cut.append(r[:at[0] + 1] if at else r)
    return cut


def ours_at(loaded, pixels, layer: int, settings: GreedySettings):
    """Our captions of ``pixels`` at one layer."""
    block = loaded.vision_block_outputs(pixels, [layer])[0]
    decoder = make_decoder(loaded, "float32", settings)
    return decoder.generate(decoder.image_embeddings(block))
