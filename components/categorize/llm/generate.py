"""Batched greedy generation with a shared, precomputed prompt prefix.

The prefix (system turn + few-shot turns) is run through the model once; its KV cache (one
that grows in place, ``growing_cache``) is copied and expanded to every batch. Each batch holds captions of similar length,
left-padded *after* the prefix: ``[prefix][pad..][caption + turn end]``, with the
attention mask hiding the pads and position ids counting only real tokens, so every row
sees exactly what it would see alone. Rows leave the batch when their answer is complete
or reaches its own token bound (``limits``), so the batch runs as long as its longest
bound, never longer. An out-of-memory error halves the batch size and retries.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from ...common.model_families.hf_cache_kwarg import cache_kwarg, cache_of
from ...common.oom import OutOfMemoryBackoff, backoff_batches
from ..grammar import GrammarLogitsProcessor
from .growing_cache import growing_cache

log = logging.getLogger(__name__)


@dataclass
class Answer:
    token_ids: list[int]
    complete: bool            # ended with a stop token (False: stopped at its token bound)


@dataclass
class GenStats:
    batches: int = 0
    steps: int = 0
    new_tokens: int = 0
    ooms: int = 0
    prefix_tokens: int = 0
    prefix_seconds: float = 0.0
    mask_seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


class Generator:
    """Greedy, grammar-constrained answers for lists of suffix token ids.

    ``compiled_grammar`` holds every row unless a batch names each row's own grammar. With
    neither and no stop ids it generates exactly ``max_new_tokens`` unconstrained tokens (the
    benchmark's fixed-length mode).
    """

    def __init__(self, model, prefix_ids: Sequence[int], compiled_grammar, stop_ids: Sequence[int],
                 pad_id: int, max_new_tokens: int, use_prefix_cache: bool = True):
        self.model = model
        self.prefix_ids = list(prefix_ids)
        self.grammar = compiled_grammar
        self.stop_ids = set(int(x) for x in stop_ids)
        self.pad_id = int(pad_id)
        self.max_new_tokens = int(max_new_tokens)
        self.use_prefix_cache = use_prefix_cache
        self.device = model.get_input_embeddings().weight.device
        self.stats = GenStats(prefix_tokens=len(self.prefix_ids))
        self._prefix_cache = None
        self._cache_kw = cache_kwarg(model)

    # -------------------------------------------------------------- prefix
    @torch.inference_mode()
    def prefix_cache(self):
        """KV cache of the shared prefix, computed on first use and kept."""
        if self._prefix_cache is None:
            t0 = time.perf_counter()
            ids = torch.tensor([self.prefix_ids], device=self.device)
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1,
                             **{self._cache_kw: growing_cache(self.model.config)})
            self._prefix_cache = cache_of(out)
            self.stats.prefix_seconds = time.perf_counter() - t0
            log.info("prompt prefix: %d tokens, KV cache computed once in %.2fs", len(self.prefix_ids), self.stats.prefix_seconds)
        return self._prefix_cache

    # -------------------------------------------------------------- one batch
    def _left_padded(self, suffixes: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ids, attention mask, position ids)`` of a batch: each row left-padded after the prefix
        (``[prefix][pad..][suffix]``), the mask hiding the pads, positions counting real tokens only."""
        B = len(suffixes)
        P = len(self.prefix_ids) if self.use_prefix_cache else 0
        rows = [list(s) if self.use_prefix_cache else self.prefix_ids + list(s) for s in suffixes]
        L = max(len(r) for r in rows)
        ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, P + L), dtype=torch.long)
        mask[:, :P] = 1
        pos = torch.full((B, L), P, dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r)
            ids[i, L - n:] = torch.tensor(r)
            mask[i, P + L - n:] = 1
            pos[i, L - n:] = torch.arange(P, P + n)
        return ids.to(self.device), mask.to(self.device), pos.to(self.device)

    @torch.inference_mode()
    def generate_batch(self, suffixes: Sequence[Sequence[int]], limits: Sequence[int] | None = None,
                       grammars: Sequence | None = None) -> list[Answer]:
        """Answers of one batch; row i stops after ``limits[i]`` new tokens (default
        ``max_new_tokens``, and never more) with ``complete=False`` unless it ended first, and is
        held to ``grammars[i]`` (default: the generator's grammar)."""
        B = len(suffixes)
        if grammars is None and self.grammar is not None:
            grammars = [self.grammar] * B
        limits = [min(int(x), self.max_new_tokens) for x in limits] if limits is not None else [self.max_new_tokens] * B
        ids, mask, pos = self._left_padded(suffixes)
        next_pos = pos[:, -1] + 1

        if self.use_prefix_cache:
            cache = copy.deepcopy(self.prefix_cache())
            if B > 1:
                cache.batch_repeat_interleave(B)
        else:
            cache = growing_cache(self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                         **{self._cache_kw: cache})
        cache = cache_of(out)
        proc = GrammarLogitsProcessor(list(grammars)) if grammars is not None else None
        active = list(range(B))                  # original row of each batch row
        finished = [False] * B
        answers = [Answer([], False) for _ in range(B)]
        last = ids[:, -1:]
        for step in range(max(limits, default=0)):
            scores = out.logits[:, -1, :].float()
            if proc is not None:
                scores = proc(last, scores)
            next_tokens = scores.argmax(-1)
            self.stats.steps += 1
            token_list = next_tokens.tolist()
            for batch_row, token in enumerate(token_list):
                row = active[batch_row]
                if finished[row]:
                    continue
                if token in self.stop_ids:
                    finished[row] = True
                    answers[row].complete = True
                else:
                    answers[row].token_ids.append(token)
                    self.stats.new_tokens += 1
                    if step + 1 >= limits[row]:      # its bound: this row stops, the batch goes on
                        finished[row] = True
            n_done = sum(finished[r] for r in active)
            if n_done == len(active):
                break
            if n_done and n_done * 8 >= len(active):
                keep = [j for j, r in enumerate(active) if not finished[r]]
                idx = torch.tensor(keep, device=self.device)
                # A CPU index: with a device_map the cache's layers live on several GPUs, and
                # indexing a tensor with an index on another GPU fails; a CPU index works on any.
                cache.batch_select_indices(torch.tensor(keep))
                if proc is not None:
                    proc.keep(keep)
                mask, next_pos, next_tokens = mask[idx], next_pos[idx], next_tokens[idx]
                active = [active[j] for j in keep]
            last = next_tokens[:, None]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            out = self.model(input_ids=last, attention_mask=mask, position_ids=next_pos[:, None],
                             use_cache=True, **{self._cache_kw: cache})
            next_pos = next_pos + 1
        self.stats.mask_seconds += proc.mask_seconds if proc is not None else 0.0
        self.stats.batches += 1
        self.stats.batch_sizes.append(B)
        return answers

    # -------------------------------------------------------------- many batches
    def generate(self, suffixes: Sequence[Sequence[int]], batch_size: int, limits: Sequence[int] | None = None,
                 grammars: Sequence | None = None) -> Iterator[tuple[list[int], list[Answer]]]:
        """Yield ``(indices, answers)`` batch by batch, in the given order; ``limits`` and
        ``grammars``: each suffix's token bound and grammar (``generate_batch``). Halves the batch
        size on out-of-memory (and keeps it halved); gives up only at batch size 1."""
        backoff = OutOfMemoryBackoff(max(1, int(batch_size)), "categorize",
                                     advice="use more GPUs (--gpus) or a smaller model")

        def answer(start: int, n: int) -> list[Answer]:
            return self.generate_batch(suffixes[start:start + n], None if limits is None else limits[start:start + n],
                                       None if grammars is None else grammars[start:start + n])

        try:
            for start, n, answers in backoff_batches(len(suffixes), backoff, answer):
                yield list(range(start, start + n)), answers
        finally:
            self.stats.ooms += backoff.ooms

    @property
    def batch_size_now(self) -> int:
        return self.stats.batch_sizes[-1] if self.stats.batch_sizes else 0
