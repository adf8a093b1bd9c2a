"""Write the folders of the tiny random Hugging Face models the package ships (configs and
tokenizers only; the weights are made from a fixed seed when a model is loaded).

    python scripts/make_tiny_hf_models.py

Each folder under ``components/common/model_configs/`` is what ``from_pretrained`` reads,
less the weights: ``config.json`` of the real class (BLIP, ViT + GPT-2, LLaVA), the image
processor's settings, and a small tokenizer of the real kind (WordPiece for BLIP's BERT
decoder, byte-level BPE for GPT-2 and the Llama of LLaVA) trained on the study's reference
captions, so that no hub is needed. Re-running it rewrites the same files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "components", "common", "model_configs")
CORPUS = os.path.join(HERE, "..", "..", "shared", "reference", "caps_batch0.json")
IMAGE_SIZE, PATCH = 64, 16
LLAVA_PROMPT_TEMPLATE = (  # llava-1.5's own chat template (llava-hf processors), trimmed to one image and text turns
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def corpus_lines() -> list[str]:
    with open(CORPUS) as f:
        captions = json.load(f)
    words = ["a photo of", "describe the image in one sentence.", "user:", "assistant:"]
    return [c for layer in captions.values() for c in layer] + words


def wordpiece_vocab(lines: list[str], size: int = 1000) -> list[str]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(lines, trainers.WordPieceTrainer(vocab_size=size, special_tokens=specials))
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    return [t for t, _ in vocab]


def byte_bpe_tokenizer(lines: list[str], specials: list[str], size: int = 1000):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=size, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def write_json(folder: str, name: str, obj: dict) -> None:
    with open(os.path.join(folder, name), "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def clip_image_processor(size: int) -> dict:
    return {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": size},
            "do_center_crop": True, "crop_size": {"height": size, "width": size}, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711], "do_convert_rgb": True, "resample": 3}


def make_blip(folder: str, lines: list[str]) -> None:
    from transformers import BertTokenizerFast, BlipConfig, BlipImageProcessor, BlipProcessor

    vocab = wordpiece_vocab(lines)
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "vocab.txt"), "w") as f:
            f.write("\n".join(vocab) + "\n")
        tokenizer = BertTokenizerFast(os.path.join(tmp, "vocab.txt"), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})  # what BLIP's own processor adds: the decoder's start token
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    size = len(tokenizer)
    config = BlipConfig(
        text_config=dict(vocab_size=size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
                         sep_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.sep_token_id),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                           image_size=IMAGE_SIZE, patch_size=PATCH),
        projection_dim=64, architectures=["BlipForConditionalGeneration"])
    config.save_pretrained(folder)
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


def make_vit_gpt2(folder: str, lines: list[str]) -> None:
    from transformers import (
        GPT2Config,
        GPT2TokenizerFast,
        VisionEncoderDecoderConfig,
        ViTConfig,
        ViTImageProcessor,
    )

    bpe = byte_bpe_tokenizer(lines, ["<|endoftext|>"])
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>")
    eos = tokenizer.eos_token_id
    encoder = ViTConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                        image_size=IMAGE_SIZE, patch_size=PATCH)
    decoder = GPT2Config(vocab_size=len(tokenizer), n_embd=48, n_layer=2, n_head=4, n_positions=64,
                         bos_token_id=eos, eos_token_id=eos, add_cross_attention=True, is_decoder=True)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = eos, eos, eos
    config.architectures = ["VisionEncoderDecoderModel"]
    config.save_pretrained(folder)
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def make_llava(folder: str, lines: list[str]) -> None:
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    bpe = byte_bpe_tokenizer(lines, ["<unk>", "<s>", "</s>", "<image>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<unk>", extra_special_tokens={"image_token": "<image>"})
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                              image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=64)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu", architectures=["LlavaForConditionalGeneration"])
    config.save_pretrained(folder)
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(**{k: v for k, v in clip_image_processor(IMAGE_SIZE).items()
                                                                    if k != "image_processor_type"}),
                               tokenizer=tokenizer, patch_size=PATCH, vision_feature_select_strategy="default",
                               image_token="<image>", num_additional_image_tokens=1, chat_template=LLAVA_PROMPT_TEMPLATE)
    processor.save_pretrained(folder)


def main() -> int:
    lines = [re.sub(r"\s+", " ", line).strip() for line in corpus_lines()]
    for name, make in (("tiny-random-blip", make_blip), ("tiny-random-vit-gpt2", make_vit_gpt2),
                       ("tiny-random-llava", make_llava)):
        folder = os.path.join(OUT, name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        make(folder, lines)
        print(f"{name}: {sorted(os.listdir(folder))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
