"""The reference greedy loop, written plainly: the whole prefix recomputed every step
through the model's own forward (open_clip ``CoCa.generate`` with top_k=1, as the study
ran it), with the study's entropy. The cached decoder must give the same tokens."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers import LogitsProcessorList, MinLengthLogitsProcessor, TopKLogitsWarper


@torch.no_grad()
def reference_greedy(model, image_embs, seq_len=30, min_seq_len=5, sot=49406, eos=49407, pad=0):
    """Returns per row (token ids after the start token up to and including the ending
    token, mean entropy bits, mean log-prob)."""
    device = image_embs.device
    eos_t = torch.tensor(eos, device=device)
    processors = LogitsProcessorList([MinLengthLogitsProcessor(min_seq_len, eos_t)])
    warper = TopKLogitsWarper(1)
    n = image_embs.shape[0]
    out = torch.full((n, 1), sot, dtype=torch.long, device=device)
    ent = [[] for _ in range(n)]
    lps = [[] for _ in range(n)]
    dummy_latent = torch.zeros(n, 1, device=device)
    while True:
        x = out
        cur_len = x.shape[1]
        logits = model(None, x, image_latent=dummy_latent, image_embs=image_embs, output_labels=False)["logits"][:, -1]
        mask = (out[:, -1] == eos) | (out[:, -1] == pad)
        sample = torch.full((n, 1), pad, dtype=torch.long, device=device)
        if mask.all():
            break
        raw_logp = torch.log_softmax(logits.float(), -1)
        filtered = warper(x[~mask], processors(x[~mask], logits[~mask]))
        probs = F.softmax(filtered, dim=-1)
        if cur_len + 1 == seq_len:
            sample[~mask] = eos
        else:
            sample[~mask] = torch.multinomial(probs, 1)
        for i in (~mask).nonzero()[:, 0].tolist():
            p = raw_logp[i]
            ent[i].append(float(-(p.exp() * p).sum() / math.log(2)))
            lps[i].append(float(p[sample[i, 0]]))
        out = torch.cat([out, sample], dim=-1)
        if out.shape[1] >= seq_len:
            break
    rows = []
    for i in range(n):
        ids = []
        for t in out[i, 1:].tolist():
            ids.append(t)
            if t in (eos, pad):
                break
        rows.append((ids, sum(ent[i]) / len(ent[i]), sum(lps[i]) / len(lps[i])))
    return rows
