"""Grounding maps: where in the image each (image, layer) caption looks (issue #21).

For block ``k``'s output ``H_k`` let ``X_k`` be the tokens just after the family's first
per-token normalisation (``DecoderHandoff.normalise``: CoCa ``attn_pool.ln_k``, BLIP
``post_layernorm``, VisionEncoderDecoder ``encoder.layernorm`` before its projection, LLaVA
``H_k`` itself). With the caption's own tokens ``y_1..y_T`` (after the start token, the token
that ended it included) forced through the decoding path captioning uses from ``X_k`` on
(``DecoderHandoff.rest``, then the decoder's ``forced_logits``: every position in one forward),

    L = sum_t log p(y_t | y_<t, X_k)          (float32, raw logits: no bans, no generation rules)
    s_p = | sum_c X_k[p, c] * dL/dX_k[p, c] |  (gradient x input, patch tokens only)

normalised to sum to 1, row-major over the encoder's patch grid. Why after the normalisation:
a LayerNorm ignores each token's scale, so gradient x input before it is zero up to its epsilon
and float32 gives rounding noise there; after it, float32 is within about 1e-6 of float64.

Many captions go through one backward pass: each row's ``X_k`` reaches only its own
caption's loss, so the gradient of the summed losses is every row's own gradient.
At ``--precision bfloat16`` the decoder runs in bfloat16 (log-probabilities and the map in float32).
"""

from __future__ import annotations

import torch

from ..common.oom import OutOfMemoryBackoff, backoff_batches


def caption_log_likelihood(decoder, decoder_inputs: torch.Tensor, token_ids: list[list[int]]) -> torch.Tensor:
    """``L`` per row ``[rows]`` (float32): the summed log-probabilities of each row's caption tokens,
    forced after the decoder's start token (rows of different lengths padded on the right; the
    causal decoder never lets a position see the padding after it)."""
    if len(token_ids) != len(decoder_inputs):
        raise ValueError(f"{len(token_ids)} captions for {len(decoder_inputs)} rows of decoder inputs")
    if any(not ids for ids in token_ids):
        raise ValueError("a caption without tokens: a caption holds at least the token that ended it")
    device = decoder_inputs.device
    rows, n = len(token_ids), max(len(ids) for ids in token_ids)
    start = decoder.settings.sot_token_id
    inputs = torch.full((rows, n), start, dtype=torch.long)
    targets = torch.full((rows, n), start, dtype=torch.long)
    valid = torch.zeros((rows, n), dtype=torch.bool)
    for i, ids in enumerate(token_ids):
        inputs[i, 1:len(ids)] = torch.tensor(ids[:-1], dtype=torch.long)
        targets[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        valid[i, :len(ids)] = True
    inputs, targets, valid = inputs.to(device), targets.to(device), valid.to(device)
    logits = decoder.forced_logits(decoder_inputs, inputs).float()
    chosen = logits.gather(-1, targets[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
    return torch.where(valid, chosen, torch.zeros_like(chosen)).sum(-1)


def grounding_maps(decoder, handoff, x: torch.Tensor, token_ids: list[list[int]]) -> torch.Tensor:
    """The maps ``[rows, rows_of_grid * cols]`` (float32, each summing to 1) of a batch of captions,
    from their ``X_k`` ``[rows, tokens, width]`` (``handoff.normalise`` of the block outputs); one
    backward pass for the batch. A map whose every patch scores 0 is uniform."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        loss = caption_log_likelihood(decoder, handoff.rest(x), token_ids)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    scores = handoff.patches((x.detach().float() * grad.float()).sum(-1).abs())
    total = scores.sum(-1, keepdim=True)
    return torch.where(total > 0, scores / total.clamp(min=torch.finfo(torch.float32).tiny),
                       torch.full_like(scores, 1.0 / scores.shape[-1]))


def vocabulary_size(decoder) -> int:
    projection = getattr(decoder, "text_projection", None)  # CoCa's cached decoder
    return projection.shape[1] if projection is not None else decoder.text_config().vocab_size


def auto_grounding_batch(decoder, n_image_tokens: int, device: str, decode_batch: int) -> int:
    """Rows per backward pass: at most the decode batch, and on a GPU what half its free memory holds
    by an estimate (every position's float32 logits three times -- logits, softmax, their gradient --
    and three times the decoder's per-row cache, for the activations a backward keeps). An
    estimate only: the out-of-memory backoff halves it further where it is too large."""
    if not device.startswith("cuda"):
        return decode_batch
    per_row = 3 * 4 * decoder.settings.seq_len * vocabulary_size(decoder) + 3 * decoder.bytes_per_row(n_image_tokens)
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return int(max(1, min(decode_batch, free * 0.5 // per_row)))


class Grounder:
    """Grounding maps for one cached decoder's captions, in batches that ``backoff`` halves on
    out-of-memory (a backward pass holds every layer's activations of every caption position).

    The rows it takes are ``X_k`` (``normalised_tokens``), which ``decoder_inputs`` turns into
    what the decoder decodes from: so one pass over the features gives both captions and maps."""

    def __init__(self, decoder, batch_size: int = 64):
        self.decoder = decoder
        self.handoff = decoder.handoff()
        self.backoff = OutOfMemoryBackoff(batch_size, "caption (grounding maps)",
                                          advice="caption without grounding maps, or on a GPU with more free memory")

    @property
    def grid(self) -> tuple[int, int]:
        rows, cols = self.handoff.grid
        return int(rows), int(cols)

    @torch.no_grad()
    def normalised_tokens(self, block_tokens: torch.Tensor) -> torch.Tensor:
        """``X_k`` of a batch of block outputs ``[n, tokens, width]``."""
        return self.handoff.normalise(block_tokens)

    @torch.no_grad()
    def decoder_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the decoder decodes from, given ``X_k``: the same as its ``image_embeddings`` of ``H_k``."""
        return self.handoff.rest(x).to(self.decoder.dtype)

    def maps(self, x: torch.Tensor, token_ids: list[list[int]]) -> torch.Tensor:
        """The maps ``[rows, patches]`` (float32, on the CPU) of captions ``token_ids`` of rows ``x``."""
        def run(start: int, n: int) -> torch.Tensor:
            return grounding_maps(self.decoder, self.handoff, x[start:start + n], token_ids[start:start + n]).cpu()

        return torch.cat([maps for _, _, maps in backoff_batches(len(x), self.backoff, run)])
