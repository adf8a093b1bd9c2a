"""CoCa captioning with a KV cache: the study's greedy loop, without recomputing the prefix.

The method (open_clip's ``CoCa.generate`` with ``generation_type="top_k", top_k=1``):
start token 49406; at most ``seq_len`` tokens including the start token; EOS (49407)
banned while the sequence is shorter than ``min_seq_len``; a row ends when it emits EOS
or 0 (pad); when ``cur_len + 1 == seq_len`` the token is forced to EOS.

What the cache changes (and nothing else):
- the text tower and the multimodal decoder process one new token per step, attending
  to cached keys/values of the earlier positions (causal self-attention makes this exact);
- the cross-attention keys/values of the image embeddings are computed once per caption;
- logits only for the new position;
- finished rows are dropped from the batch (the caches compacted) once they are the
  majority, so late steps cost what the rows still running cost.

The text tower's appended CLS token sits after every text position and is masked from
them by the causal mask, so the caption path never sees it: it is not computed.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..common.models import EOS_TOKEN_ID, PAD_TOKEN_ID, SOT_TOKEN_ID
from ..common.precision import parse_dtype, torch_dtype

LN2 = math.log(2.0)


@dataclass(frozen=True)
class GreedySettings:
    seq_len: int = 30
    min_seq_len: int = 5
    sot_token_id: int = SOT_TOKEN_ID
    eos_token_id: int = EOS_TOKEN_ID
    pad_token_id: int = PAD_TOKEN_ID

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


@dataclass
class KVCache:
    """Keys/values of one decode batch, as an explicit object.

    ``self_k[i]``/``self_v[i]``: causal self-attention of attention layer ``i`` (text
    tower layers first, then the multimodal decoder's), ``[rows, heads, seq_len, head_dim]``,
    filled one position per step. ``cross_k[j]``/``cross_v[j]``: cross-attention of
    decoder layer ``j`` over the image embeddings, ``[rows, heads, n_image_tokens, head_dim]``.
    """

    self_k: list[torch.Tensor] = field(default_factory=list)
    self_v: list[torch.Tensor] = field(default_factory=list)
    cross_k: list[torch.Tensor] = field(default_factory=list)
    cross_v: list[torch.Tensor] = field(default_factory=list)

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Drop finished rows (compaction): ``rows`` are the indices to keep."""
        for lst in (self.self_k, self.self_v, self.cross_k, self.cross_v):
            for i, t in enumerate(lst):
                lst[i] = t.index_select(0, rows)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    n, l, d = x.shape
    return x.view(n, l, heads, d // heads).transpose(1, 2)


class CachedCocaDecoder(nn.Module):
    """Greedy captions from image tokens with a KV cache; reads the weights of an open_clip CoCa.

    ``precision``: ``float32`` (token-for-token the reference loop, with TF32 off on the
    GPU: ``common.precision.exact_float32_math``) or ``bfloat16`` (fast; a near-tie between
    two tokens can resolve differently). Modules are copied, so the model given is not changed.
    """

    def __init__(self, coca: nn.Module, precision: str = "float32", settings: GreedySettings | None = None):
        super().__init__()
        self.precision = parse_dtype(precision, ("float32", "bfloat16"), what="--precision")
        self.dtype = torch_dtype(self.precision)
        self.settings = settings or GreedySettings()
        text, dec, visual = coca.text, coca.text_decoder, coca.visual
        self.attn_pool = copy.deepcopy(visual.attn_pool)
        self.ln_post = copy.deepcopy(visual.ln_post)
        self.token_embedding = copy.deepcopy(text.token_embedding)
        self.register_buffer("positional_embedding", text.positional_embedding.detach().clone())
        self.text_blocks = copy.deepcopy(text.transformer.resblocks)
        self.decoder_blocks = copy.deepcopy(dec.resblocks)
        self.cross_blocks = copy.deepcopy(dec.cross_attn)
        self.ln_final = copy.deepcopy(dec.ln_final)
        self.register_buffer("text_projection", dec.text_projection.detach().clone())
        self.text_heads = self.text_blocks[0].attn.num_heads
        self.decoder_heads = self.decoder_blocks[0].attn.num_heads
        max_pos = min(self.positional_embedding.shape[0], dec.attn_mask.shape[0])
        if self.settings.seq_len > max_pos:
            raise ValueError(f"--seq-len {self.settings.seq_len} exceeds the model's context of {max_pos} tokens")
        self.to(self.dtype).eval().requires_grad_(False)

    # ----------------------------------------------------------- image side

    @torch.no_grad()
    def image_embeddings(self, block_tokens: torch.Tensor) -> torch.Tensor:
        """A vision block's output ``[n, tokens, width]`` -> the decoder's image embeddings
        ``[n, n_queries - 1, embed_dim]``: attentional pooler, ``ln_post``, first token dropped
        (what ``model.visual`` does after its last block)."""
        x = self.ln_post(self.attn_pool(block_tokens.to(self.dtype)))
        return x[:, 1:]

    def _cross_kv(self, image_embs: torch.Tensor, cache: KVCache) -> None:
        for block in self.cross_blocks:
            attn = block.attn
            d = attn.embed_dim
            kv = block.ln_1_kv(image_embs)
            k = F.linear(kv, attn.in_proj_weight[d:2 * d], attn.in_proj_bias[d:2 * d])
            v = F.linear(kv, attn.in_proj_weight[2 * d:], attn.in_proj_bias[2 * d:])
            cache.cross_k.append(_split_heads(k, attn.num_heads))
            cache.cross_v.append(_split_heads(v, attn.num_heads))

    # ----------------------------------------------------------- one step

    def _self_attention(self, block, x, cache: KVCache, layer: int, pos: int, heads: int) -> torch.Tensor:
        attn = block.attn
        q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (_split_heads(t, heads) for t in (q, k, v))
        cache.self_k[layer][:, :, pos:pos + 1] = k
        cache.self_v[layer][:, :, pos:pos + 1] = v
        out = F.scaled_dot_product_attention(q, cache.self_k[layer][:, :, :pos + 1], cache.self_v[layer][:, :, :pos + 1])
        out = out.transpose(1, 2).reshape(x.shape)
        x = x + block.ls_1(attn.out_proj(out))
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def _cross_attention(self, block, x, cache: KVCache, layer: int) -> torch.Tensor:
        attn = block.attn
        d = attn.embed_dim
        q = _split_heads(F.linear(block.ln_1(x), attn.in_proj_weight[:d], attn.in_proj_bias[:d]), attn.num_heads)
        out = F.scaled_dot_product_attention(q, cache.cross_k[layer], cache.cross_v[layer])
        out = out.transpose(1, 2).reshape(x.shape)
        x = x + block.ls_1(attn.out_proj(out))
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def step(self, tokens: torch.Tensor, pos: int, cache: KVCache) -> torch.Tensor:
        """Logits ``[rows, vocab]`` (float32) for the token after ``tokens`` at position ``pos``."""
        x = self.token_embedding(tokens).to(self.dtype)[:, None, :] + self.positional_embedding[pos]
        for i, block in enumerate(self.text_blocks):
            x = self._self_attention(block, x, cache, i, pos, self.text_heads)
        n_text = len(self.text_blocks)
        for j, (block, cross) in enumerate(zip(self.decoder_blocks, self.cross_blocks)):
            x = self._self_attention(block, x, cache, n_text + j, pos, self.decoder_heads)
            x = self._cross_attention(cross, x, cache, j)
        return (self.ln_final(x[:, 0]) @ self.text_projection).float()

    def new_cache(self, image_embs: torch.Tensor) -> KVCache:
        rows, s = image_embs.shape[0], self.settings.seq_len
        cache = KVCache()
        for blocks, heads in ((self.text_blocks, self.text_heads), (self.decoder_blocks, self.decoder_heads)):
            for block in blocks:
                d = block.attn.embed_dim
                for lst in (cache.self_k, cache.self_v):
                    lst.append(torch.empty(rows, heads, s, d // heads, dtype=self.dtype, device=image_embs.device))
        self._cross_kv(image_embs, cache)
        return cache

    # ----------------------------------------------------------- the loop

    @torch.no_grad()
    def generate(self, image_embs: torch.Tensor, compact_below: float = 0.5) -> DecodedCaptions:
        """Greedy captions for a batch of image embeddings ``[rows, n_image_tokens, dim]``."""
        greedy = self.settings
        rows, device = image_embs.shape[0], image_embs.device
        cache = self.new_cache(image_embs.to(self.dtype))
        out = torch.full((rows, greedy.seq_len), greedy.pad_token_id, dtype=torch.long, device=device)
        out[:, 0] = greedy.sot_token_id
        length = torch.ones(rows, dtype=torch.long, device=device)       # tokens incl. start
        entropy_sum = torch.zeros(rows, dtype=torch.float64, device=device)
        logprob_sum = torch.zeros(rows, dtype=torch.float64, device=device)
        stop_code = torch.zeros(rows, dtype=torch.long, device=device)   # 0 eos, 1 pad, 2 length
        active = torch.arange(rows, device=device)                       # original row of each cache row
        running = torch.ones(rows, dtype=torch.bool, device=device)      # per cache row

        for pos in range(greedy.seq_len - 1):
            cur_len = pos + 1
            logits = self.step(out[active, pos], pos, cache)
            logp = torch.log_softmax(logits, dim=-1)
            entropy = -(logp.exp() * logp).sum(-1) / LN2
            if cur_len + 1 == greedy.seq_len:
                nxt = torch.full_like(active, greedy.eos_token_id)
            else:
                if cur_len < greedy.min_seq_len:
                    logits[:, greedy.eos_token_id] = -float("inf")
                nxt = logits.argmax(-1)
            chosen_lp = logp.gather(1, nxt[:, None])[:, 0]

            live = active[running]
            out[live, pos + 1] = nxt[running]
            length[live] += 1
            entropy_sum[live] += entropy[running].double()
            logprob_sum[live] += chosen_lp[running].double()
            ended = running & ((nxt == greedy.eos_token_id) | (nxt == greedy.pad_token_id))
            if cur_len + 1 == greedy.seq_len:
                stop_code[active[ended]] = 2
            else:
                stop_code[active[ended]] = torch.where(nxt[ended] == greedy.eos_token_id, 0, 1)
            running &= ~ended
            n_running = int(running.sum())
            if n_running == 0:
                break
            if n_running < compact_below * len(active):
                keep = running.nonzero()[:, 0]
                cache.keep_rows(keep)
                active, running = active[keep], running[keep]

        n_gen = (length - 1).clamp(min=1).double()
        # One device-to-host copy per batch (a .tolist() per row would wait on the GPU once per row).
        tokens_host, lengths_host, stops_host, entropy_host, logprob_host = (
            t.cpu().tolist() for t in (out, length, stop_code, entropy_sum / n_gen, logprob_sum / n_gen))
        token_ids = [row[1:n] for row, n in zip(tokens_host, lengths_host)]
        stops = [("eos", "pad", "length")[code] for code in stops_host]
        return DecodedCaptions(token_ids, stops, entropy_host, logprob_host)


def caption_text(tokenizer, token_ids: list[int]) -> str:
    """The caption's text: tokens up to (not including) the one that ended it, decoded the
    way the study did (open_clip's tokenizer, surrounding spaces stripped)."""
    ids = [t for t in token_ids if t not in (EOS_TOKEN_ID, PAD_TOKEN_ID, SOT_TOKEN_ID)]
    return tokenizer.decode(ids).strip() if ids else ""
