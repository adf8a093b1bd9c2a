"""CoCa captioning with a KV cache: the study's greedy loop (``greedy.py``), without
recomputing the prefix. CoCa's ids: start token 49406, end token (EOS) 49407, and token 0
(pad) also ends a caption.

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
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..common.memory_budget import itemsize, kv_bytes_per_token, logits_bytes
from ..common.model_families.base import DecoderHandoff
from ..common.model_families.coca import coca_handoff
from ..common.model_families.coca_loading import caption_text  # noqa: F401 -- CoCa's caption text, where callers of this module look for it
from ..common.precision import parse_dtype, torch_dtype
from .greedy import DecodedCaptions, GreedySettings, greedy_decode


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
        self.grid = tuple(visual.grid_size)
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

    def bytes_per_row(self, n_image_tokens: int) -> int:
        """Device memory one decode row holds: self-attention caches, the image's cross-attention
        keys/values and embeddings, and the step's logits, log-probs and probs in float32."""
        d = self.ln_final.normalized_shape[0]
        self_attention = kv_bytes_per_token(len(self.text_blocks) + len(self.decoder_blocks), d, self.dtype)
        cross_attention = kv_bytes_per_token(len(self.cross_blocks), d, self.dtype)
        embeddings = itemsize(self.dtype) * d * n_image_tokens
        return (self_attention * self.settings.seq_len + cross_attention * n_image_tokens + embeddings
                + logits_bytes(self.text_projection.shape[1]))

    # ----------------------------------------------------------- image side

    @torch.no_grad()
    def image_embeddings(self, block_tokens: torch.Tensor) -> torch.Tensor:
        """A vision block's output ``[n, tokens, width]`` -> the decoder's image embeddings
        ``[n, n_queries - 1, embed_dim]``: attentional pooler, ``ln_post``, first token dropped
        (what ``model.visual`` does after its last block)."""
        x = self.ln_post(self.attn_pool(block_tokens.to(self.dtype)))
        return x[:, 1:]

    def handoff(self) -> DecoderHandoff:
        """``image_embeddings`` split after ``attn_pool.ln_k`` (grounding maps), on this decoder's copies."""
        return coca_handoff(self.attn_pool, self.ln_post, self.grid)

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

    def forced_logits(self, image_embs: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[rows, T, vocab]`` (float32) after each of ``input_ids`` ``[rows, T]`` (the start
        token, then a caption's tokens), all positions in one forward (teacher forcing, no cache):
        the modules ``step`` runs, through their own forward with the causal mask, as the model's
        text tower and multimodal decoder run them. Differentiable in ``image_embs``."""
        image_embs = image_embs.to(self.dtype)
        n = input_ids.shape[1]
        causal = torch.full((n, n), float("-inf"), dtype=self.dtype, device=input_ids.device).triu_(1)
        x = self.token_embedding(input_ids).to(self.dtype) + self.positional_embedding[:n]
        for block in self.text_blocks:
            x = block(x, attn_mask=causal)
        for block, cross in zip(self.decoder_blocks, self.cross_blocks):
            x = block(x, attn_mask=causal)
            x = cross(x, k_x=image_embs, v_x=image_embs)
        return (self.ln_final(x) @ self.text_projection).float()

    # ----------------------------------------------------------- the loop

    def start(self, image_embs: torch.Tensor) -> tuple[KVCache, torch.Tensor]:
        """The greedy loop's first step: the cache of a batch and the logits after the start token."""
        image_embs = image_embs.to(self.dtype)
        cache = self.new_cache(image_embs)
        sot = torch.full((image_embs.shape[0],), self.settings.sot_token_id, dtype=torch.long, device=image_embs.device)
        return cache, self.step(sot, 0, cache)

    def generate(self, image_embs: torch.Tensor, compact_below: float = 0.5) -> DecodedCaptions:
        """Greedy captions for a batch of image embeddings ``[rows, n_image_tokens, dim]``."""
        return greedy_decode(self, image_embs, compact_below)
