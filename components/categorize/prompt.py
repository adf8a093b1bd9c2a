"""The few-shot chat prompt, split into a shared prefix and a per-caption suffix.

Everything before the caption (system turn, example turns, the user turn's header) is
the same for every caption: its tokens are computed once and its KV cache is reused for
every batch. The suffix is the caption plus the end of the user turn and the assistant
header.
"""

from __future__ import annotations

from dataclasses import dataclass

from .answers import render_answer
from .labelset import LabelSet

# Llama-3 chat format, for tokenizers that ship without a chat template (the Llama-3
# tokenizer.json used by the offline `tiny-random-llama` model).
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
_SENTINEL = "\u2063CAPTION\u2063"


def messages(label_set: LabelSet, caption: str) -> list[dict]:
    msgs = [{"role": "system", "content": label_set.system_text()}]
    for ex in label_set.examples:
        msgs.append({"role": "user", "content": label_set.user_text(ex.caption)})
        msgs.append({"role": "assistant", "content": render_answer(ex.parts)})
    msgs.append({"role": "user", "content": label_set.user_text(caption)})
    return msgs


def ensure_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE


def render(tokenizer, label_set: LabelSet, caption: str) -> str:
    ensure_chat_template(tokenizer)
    return tokenizer.apply_chat_template(messages(label_set, caption), tokenize=False, add_generation_prompt=True)


@dataclass
class PromptParts:
    suffix_template: str          # contains {caption} exactly once
    prefix_ids: list[int]

    def suffix_ids(self, tokenizer, caption: str) -> list[int]:
        text = self.suffix_template.replace(_SENTINEL, caption)
        return tokenizer.encode(text, add_special_tokens=False)

    def full_ids(self, tokenizer, caption: str) -> list[int]:
        return self.prefix_ids + self.suffix_ids(tokenizer, caption)


def split_prompt(tokenizer, label_set: LabelSet) -> PromptParts:
    """Render the prompt once with a sentinel caption and split it there."""
    text = render(tokenizer, label_set, _SENTINEL)
    if text.count(_SENTINEL) != 1:
        raise ValueError("the prompt must contain the caption exactly once (prompt.user: '{caption}')")
    head, tail = text.split(_SENTINEL)
    return PromptParts(_SENTINEL + tail, tokenizer.encode(head, add_special_tokens=False))
