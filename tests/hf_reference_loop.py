"""The reference greedy loop of the Hugging Face families, written plainly: every step
recomputes the whole prefix through the model's own forward (``use_cache=False``), with the
study's rules and entropy. Nothing of ours runs here but the adapter's ``decoder_inputs``
(a block's output -> the decoder's input), which the tests hand in already applied.

- BLIP: ``model.text_decoder(input_ids=all tokens so far, encoder_hidden_states=image)``;
- VisionEncoderDecoder: ``model.decoder(input_ids=..., encoder_hidden_states=image)``;
- LLaVA: the chat prompt's embeddings with the image features at the image-token positions,
  then the generated tokens' embeddings, through ``model(inputs_embeds=...)``.

The rules (as open_clip ``CoCa.generate`` with top_k=1, the study's run; see
``tests/reference_loop.py``): a caption holds at most ``seq_len`` tokens
including the start token; the end token is banned while the sequence is shorter than
``min_seq_len``; a row ends at the end token; at ``cur_len + 1 == seq_len`` the end token is
forced. Entropy of the raw softmax (temperature 1, before the ban) in bits, and the log-prob
of the chosen token under that softmax, each averaged over the generated tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList, MinLengthLogitsProcessor


@dataclass
class ReferenceRow:
    token_ids: list[int]   # after the start token, up to and including the ending token
    stop: str              # "eos" (emitted) or "length" (forced at seq_len)
    entropy_bits: float
    mean_logprob: float


@torch.no_grad()
def reference_greedy(next_logits, rows: int, start: int, eos: int | list[int], seq_len: int = 30, min_seq_len: int = 5,
                     device="cpu") -> list[ReferenceRow]:
    """``next_logits(tokens)``: the logits ``[rows, vocab]`` after ``tokens`` ``[rows, cur_len]``
    (start token first), the whole prefix recomputed. ``eos``: the end token, or several (all
    banned below ``min_seq_len``, any ends a row, the first forced at ``seq_len``)."""
    ends = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    eos = ends[0]
    ban_eos = LogitsProcessorList([MinLengthLogitsProcessor(min_seq_len, torch.tensor(ends, device=device))])
    tokens = torch.full((rows, 1), start, dtype=torch.long, device=device)
    done = [None] * rows
    entropy = [[] for _ in range(rows)]
    logprob = [[] for _ in range(rows)]
    while any(d is None for d in done):
        cur_len = tokens.shape[1]
        logits = next_logits(tokens).float()
        raw_logp = torch.log_softmax(logits, -1)
        if cur_len + 1 == seq_len:
            chosen = torch.full((rows,), eos, dtype=torch.long, device=device)
        else:
            chosen = ban_eos(tokens, logits.clone()).argmax(-1)
        for i in range(rows):
            if done[i] is not None:
                continue
            p = raw_logp[i]
            entropy[i].append(float(-(p.exp() * p).sum() / math.log(2)))
            logprob[i].append(float(p[chosen[i]]))
            if cur_len + 1 == seq_len:
                done[i] = "length"
            elif int(chosen[i]) in ends:
                done[i] = "eos"
        tokens = torch.cat([tokens, chosen[:, None]], dim=1)   # finished rows carry on; their tail is ignored
    result = []
    for i in range(rows):
        n = len(entropy[i])
        result.append(ReferenceRow(tokens[i, 1:1 + n].tolist(), done[i], sum(entropy[i]) / n, sum(logprob[i]) / n))
    return result


def blip_logits(model, image_states):
    """BLIP: the text decoder over the whole prefix, reading the image by cross-attention."""
    return lambda tokens: model.text_decoder(input_ids=tokens, encoder_hidden_states=image_states,
                                             use_cache=False).logits[:, -1]


def vision_encoder_decoder_logits(model, image_states):
    """VisionEncoderDecoder: the decoder over the whole prefix, reading the image by cross-attention."""
    return lambda tokens: model.decoder(input_ids=tokens, encoder_hidden_states=image_states,
                                        use_cache=False).logits[:, -1]


def llava_logits(model, prompt_ids: list[int], image_features):
    """LLaVA: the prompt (its last token is the caption's start token) with the image features
    at its image-token positions, then the generated tokens, as input embeddings."""
    embed = model.get_input_embeddings()
    ids = torch.tensor(prompt_ids, device=image_features.device)
    positions = (ids == model.config.image_token_id).nonzero()[:, 0]
    rows = image_features.shape[0]
    prompt = embed(ids)[None].repeat(rows, 1, 1)
    prompt[:, positions] = image_features.to(prompt.dtype)

    def next_logits(tokens):
        generated = embed(tokens[:, 1:])               # tokens[:, 0] is the prompt's last token
        embeds = torch.cat([prompt, generated], dim=1)
        return model(inputs_embeds=embeds, use_cache=False).logits[:, -1]

    return next_logits
