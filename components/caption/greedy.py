"""The study's greedy decoding rules, once, for every model family.

open_clip's ``CoCa.generate`` with ``generation_type="top_k", top_k=1``, as the study ran it:
a caption starts with the start token and holds at most ``seq_len`` tokens including it;
the end token is banned while the sequence is shorter than ``min_seq_len``; a row ends when
it emits the end token (or, for CoCa, token 0, the pad); when ``cur_len + 1 == seq_len`` the
token is forced to the end token. Entropy: of the full softmax at temperature 1, before any
logits processing, in bits, averaged over every generated token.

A Hugging Face model may list several end tokens (Llama-3- and Qwen2-based LLaVA conversions
do): all are banned below ``min_seq_len`` and any ends a caption, as in its own ``generate``; the
one forced at ``seq_len`` is the first listed, the model's primary end token (the study's rule
forces its model's only one).

The loop drives a *step model* (a family's cached decoder), which gives:
- ``settings``: ``GreedySettings`` with the family's start / end / pad ids;
- ``start(decoder_inputs) -> (state, logits)``: the cache set up for a batch of rows, and
  the logits ``[rows, vocab]`` (float32) for the first token after the start;
- ``step(tokens, pos, state) -> logits``: the logits after feeding ``tokens`` ``[rows]`` at
  position ``pos`` (1, 2, ...);
- ``state.keep_rows(rows)``: drop finished rows from the cache (compaction);
- optionally ``logits_rules``: a ``generation_settings.LogitsRules`` (a Hugging Face model's
  generation config), applied after the entropy is measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..common.model_families.coca_loading import EOS_TOKEN_ID, PAD_TOKEN_ID, SOT_TOKEN_ID

LN2 = math.log(2.0)


@dataclass(frozen=True)
class GreedySettings:
    """``pad_token_id`` None: only the end tokens end a caption (Hugging Face families; CoCa's
    loop also stops at token 0). ``eos_token_id`` is forced at ``seq_len``; ``other_end_token_ids``
    also end a caption and are banned below ``min_seq_len`` with it."""

    seq_len: int = 30
    min_seq_len: int = 5
    sot_token_id: int = SOT_TOKEN_ID
    eos_token_id: int = EOS_TOKEN_ID
    pad_token_id: int | None = PAD_TOKEN_ID
    other_end_token_ids: tuple[int, ...] = ()

    @property
    def end_token_ids(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys((self.eos_token_id, *self.other_end_token_ids)))

    def __post_init__(self):
        if self.seq_len <= self.min_seq_len:
            raise ValueError(f"--seq-len ({self.seq_len}) must be larger than --min-seq-len ({self.min_seq_len})")
        if self.min_seq_len < 1:
            raise ValueError("--min-seq-len must be at least 1")


@dataclass
class DecodedCaptions:
    """Per row: generated token ids (without the start token, with the token that ended
    the caption), why it stopped, mean entropy (bits) of the full softmax over those
    steps (temperature 1, before any logits processing) and mean log-probability of the
    chosen tokens under that same distribution."""

    token_ids: list[list[int]]
    stop: list[str]
    entropy_bits: list[float]
    mean_logprob: list[float]


@torch.no_grad()
def greedy_decode(model, decoder_inputs: torch.Tensor, compact_below: float = 0.5) -> DecodedCaptions:
    """Greedy captions for a batch of rows (``decoder_inputs[i]`` is row ``i``'s image input).

    Finished rows are dropped from the cache once they are the majority (below
    ``compact_below`` of the rows still held), so late steps cost what the rows still running cost.
    """
    greedy = model.settings
    rows, device = decoder_inputs.shape[0], decoder_inputs.device
    out = torch.full((rows, greedy.seq_len), greedy.pad_token_id or 0, dtype=torch.long, device=device)
    out[:, 0] = greedy.sot_token_id
    length = torch.ones(rows, dtype=torch.long, device=device)       # tokens incl. start
    entropy_sum = torch.zeros(rows, dtype=torch.float64, device=device)
    logprob_sum = torch.zeros(rows, dtype=torch.float64, device=device)
    stop_code = torch.zeros(rows, dtype=torch.long, device=device)   # 0 eos, 1 pad, 2 length
    active = torch.arange(rows, device=device)                       # original row of each cache row
    running = torch.ones(rows, dtype=torch.bool, device=device)      # per cache row
    end_ids = torch.tensor(greedy.end_token_ids, dtype=torch.long, device=device)
    rules = getattr(model, "logits_rules", None)
    state, logits = model.start(decoder_inputs)

    for pos in range(greedy.seq_len - 1):
        cur_len = pos + 1
        if pos:
            logits = model.step(out[active, pos], pos, state)
        logp = torch.log_softmax(logits, dim=-1)
        entropy = -(logp.exp() * logp).sum(-1) / LN2
        if cur_len + 1 == greedy.seq_len:
            nxt = torch.full_like(active, greedy.eos_token_id)
        else:
            if rules is not None:
                input_ids = rules.input_ids(out[active, :cur_len])
                logits = rules.run(rules.before_ban, input_ids, logits)
            if cur_len < greedy.min_seq_len:
                logits[:, end_ids] = -float("inf")
            if rules is not None:
                logits = rules.run(rules.after_ban, input_ids, logits)
            nxt = logits.argmax(-1)
        chosen_lp = logp.gather(1, nxt[:, None])[:, 0]

        live = active[running]
        out[live, pos + 1] = nxt[running]
        length[live] += 1
        entropy_sum[live] += entropy[running].double()
        logprob_sum[live] += chosen_lp[running].double()
        is_pad = nxt == greedy.pad_token_id if greedy.pad_token_id is not None else torch.zeros_like(running)
        is_end = torch.isin(nxt, end_ids)
        ended = running & (is_end | is_pad)
        if cur_len + 1 == greedy.seq_len:
            stop_code[active[ended]] = 2
        else:
            stop_code[active[ended]] = torch.where(is_end[ended], 0, 1)
        running &= ~ended
        n_running = int(running.sum())
        if n_running == 0:
            break
        if n_running < compact_below * len(active):
            keep = running.nonzero()[:, 0]
            state.keep_rows(keep)
            active, running = active[keep], running[keep]

    n_gen = (length - 1).clamp(min=1).double()
    # One device-to-host copy per batch (a .tolist() per row would wait on the GPU once per row).
    tokens_host, lengths_host, stops_host, entropy_host, logprob_host = (
        t.cpu().tolist() for t in (out, length, stop_code, entropy_sum / n_gen, logprob_sum / n_gen))
    token_ids = [row[1:n] for row, n in zip(tokens_host, lengths_host)]
    stops = [("eos", "pad", "length")[code] for code in stops_host]
    return DecodedCaptions(token_ids, stops, entropy_host, logprob_host)
