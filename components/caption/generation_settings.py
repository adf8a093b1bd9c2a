"""A Hugging Face model's generation config, as greedy decoding honours it.

Settings in a model's ``generation_config`` change what its own ``generate`` produces, also
greedily: a repetition penalty, banned n-grams, banned or suppressed tokens, a forced first
token. The caption loop applies them with transformers' own logits processors, in the order
``generate`` does, on the logits *after* the entropy is measured (entropy and log-prob are of
the raw softmax: the captions contract). Settings we cannot apply exactly refuse the model
with a message naming them. Length settings (``max_length``, ``min_length``, ...) are replaced
by the caption step's ``seq_len`` / ``min_seq_len``, and sampling or beam settings by greedy
decoding, the study's method; the applied settings are recorded in the captions' provenance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Settings that change greedy output and that we do not apply: name -> its no-op value(s).
REFUSED = {
    "encoder_repetition_penalty": (None, 1.0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "guidance_scale": (None, 1.0),
    "exponential_decay_length_penalty": (None,),
    "watermarking_config": (None,),
    "token_healing": (None, False),
    "dola_layers": (None,),
    "forced_decoder_ids": (None, [], ()),
}


@dataclass
class LogitsRules:
    """The generation config's processors around the loop's own end-token ban (``generate``'s order:
    penalties and bans before its minimum-length ban, the forced first token and suppressions after).

    ``prefix_ids``: what ``generate``'s ``input_ids`` hold before the caption's start token (LLaVA:
    the prompt; it counts for the repetition penalty, n-grams and the first position)."""

    before_ban: list = field(default_factory=list)
    after_ban: list = field(default_factory=list)
    prefix_ids: list[int] = field(default_factory=list)
    applied: dict = field(default_factory=dict)

    def input_ids(self, caption_ids: torch.Tensor) -> torch.Tensor:
        """``generate``'s ``input_ids`` of rows whose tokens so far (start token first) are ``caption_ids``."""
        if not self.prefix_ids:
            return caption_ids
        prefix = torch.tensor(self.prefix_ids, dtype=caption_ids.dtype, device=caption_ids.device)
        return torch.cat([prefix.expand(caption_ids.shape[0], -1), caption_ids], dim=1)

    @staticmethod
    def run(processors, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        for processor in processors:
            logits = processor(input_ids, logits)
        return logits


def _is_set(value, unset) -> bool:
    return not any(value is u or (u is not None and value == u) for u in unset)


def logits_rules(name: str, generation_config, end_token_ids: tuple[int, ...], prefix_ids: list[int],
                 device: str | torch.device = "cpu") -> LogitsRules | None:
    """The processors of the settings ``generation_config`` holds, or None when it holds none;
    a ValueError naming any setting that greedy ``generate`` honours and we cannot apply."""
    from transformers import (
        ForcedBOSTokenLogitsProcessor,
        NoBadWordsLogitsProcessor,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        SequenceBiasLogitsProcessor,
        SuppressTokensAtBeginLogitsProcessor,
        SuppressTokensLogitsProcessor,
    )

    config = generation_config
    refused = {k: getattr(config, k, None) for k, unset in REFUSED.items() if _is_set(getattr(config, k, None), unset)}
    if refused:
        settings = ", ".join(f"{k}={v!r}" for k, v in refused.items())
        raise ValueError(f"{name}: its generation config sets {settings}, which changes what its own generate produces "
                         "and which the caption step does not apply; remove it from the model folder's "
                         "generation_config.json (and give that folder as the model or --pretrained) to caption it")
    rules = LogitsRules(prefix_ids=list(prefix_ids))
    value = config.sequence_bias
    if value:
        rules.before_ban.append(SequenceBiasLogitsProcessor(sequence_bias=value))
        rules.applied["sequence_bias"] = ([[list(k), v] for k, v in value.items()] if isinstance(value, dict)
                                          else value)   # JSON has no tuple keys
    value = config.repetition_penalty
    if value is not None and value != 1.0:
        rules.before_ban.append(RepetitionPenaltyLogitsProcessor(value))
        rules.applied["repetition_penalty"] = value
    value = config.no_repeat_ngram_size
    if value:
        rules.before_ban.append(NoRepeatNGramLogitsProcessor(value))
        rules.applied["no_repeat_ngram_size"] = value
    value = config.bad_words_ids
    if value:
        rules.before_ban.append(NoBadWordsLogitsProcessor(value, list(end_token_ids)))
        rules.applied["bad_words_ids"] = value
    value = config.forced_bos_token_id
    if value is not None:
        rules.after_ban.append(ForcedBOSTokenLogitsProcessor(value))
        rules.applied["forced_bos_token_id"] = value
    value = config.suppress_tokens
    if value:
        rules.after_ban.append(SuppressTokensLogitsProcessor(value, device=device))
        rules.applied["suppress_tokens"] = value
    value = config.begin_suppress_tokens
    if value:
        start_length = len(prefix_ids) + 1   # generate's input_ids_seq_length: the prompt and the start token
        begin = start_length if start_length > 1 or config.forced_bos_token_id is None else start_length + 1
        rules.after_ban.append(SuppressTokensAtBeginLogitsProcessor(value, begin, device=device))
        rules.applied["begin_suppress_tokens"] = value
    return rules if rules.applied else None
