"""Grammar-constrained decoding: the answer schema compiled by xgrammar, applied through a
transformers ``LogitsProcessor`` that masks every token the grammar does not allow."""

from __future__ import annotations

import json
import logging
import time

import torch
import transformers

from .answers import AnswerBounds, answer_schema
from .labelset import LabelSet

log = logging.getLogger(__name__)


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """EOS ids of the tokenizer and the model's generation config (and Llama-3's <|eot_id|>)."""
    ids: set[int] = set()
    for src in (getattr(tokenizer, "eos_token_id", None), getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(int(x) for x in src)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>") if "<|eot_id|>" in tokenizer.get_vocab() else None
    if eot is not None:
        ids.add(int(eot))
    if not ids:
        raise ValueError("the tokenizer has no EOS token: cannot end a constrained answer")
    return sorted(ids)


class AnswerGrammars:
    """The compiled answer grammar of each ``AnswerBounds``, compiled on first use and kept
    (one xgrammar tokenizer info and compiler for all of them)."""

    def __init__(self, tokenizer, label_set: LabelSet, vocab_size: int, stop_ids: list[int]):
        import xgrammar as xgr

        self.label_set = label_set
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=max(vocab_size, len(tokenizer)), stop_token_ids=stop_ids)
        self._compiler = xgr.GrammarCompiler(info)
        self._compiled: dict[AnswerBounds, object] = {}
        self.schemas: dict[str, dict] = {}          # bounds key -> the exact schema (recorded with the answers)

    def __call__(self, bounds: AnswerBounds):
        if bounds not in self._compiled:
            t0 = time.perf_counter()
            schema = answer_schema(self.label_set, bounds)
            self._compiled[bounds] = self._compiler.compile_json_schema(
                json.dumps(schema), any_whitespace=False, separators=(",", ":"), strict_mode=True)
            self.schemas[bounds.key] = schema
            log.info("answer grammar %s compiled in %.2fs (%d labels)", bounds.key, time.perf_counter() - t0, len(self.label_set.labels))
        return self._compiled[bounds]


def compile_answer_grammar(tokenizer, label_set: LabelSet, vocab_size: int, stop_ids: list[int], bounds: AnswerBounds):
    """The compiled grammar of one ``AnswerBounds``."""
    return AnswerGrammars(tokenizer, label_set, vocab_size, stop_ids)(bounds)


class GrammarLogitsProcessor(transformers.LogitsProcessor):
    """Masks the logits of each row to the tokens its grammar matcher allows.

    Unlike ``xgrammar.contrib.hf.LogitsProcessor``, each row has a grammar of its own
    (``grammars``: one compiled grammar per row, of one tokenizer), so captions of different
    answer bounds share a batch, and rows can be dropped from the batch (``keep``) when the
    generation loop shrinks it. Call protocol as in transformers' ``generate``: the first call
    sees the prompt, every later call first accepts each row's last token.
    """

    def __init__(self, grammars: list):
        import xgrammar as xgr

        self._xgr = xgr
        self.matchers = [xgr.GrammarMatcher(grammar) for grammar in grammars]
        self.vocab_size = grammars[0].tokenizer_info.vocab_size
        self.bitmask = xgr.allocate_token_bitmask(len(grammars), self.vocab_size)
        self.started = False
        self.mask_seconds = 0.0

    def keep(self, rows: list[int]) -> None:
        self.matchers = [self.matchers[i] for i in rows]
        self.bitmask = self.bitmask[rows].contiguous() if rows else self.bitmask[:0]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        t0 = time.perf_counter()
        if len(self.matchers) != scores.shape[0]:
            raise RuntimeError(f"grammar processor has {len(self.matchers)} rows, logits {scores.shape[0]}")
        if self.started:
            last = input_ids[:, -1].tolist()
            for matcher, token in zip(self.matchers, last):
                if not matcher.is_terminated() and not matcher.accept_token(token):
                    raise RuntimeError(f"token {token} rejected by the grammar: the mask was not applied")
        self.started = True
        for row, matcher in enumerate(self.matchers):
            if not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self.bitmask, row)
        vocab = scores.shape[-1]
        if vocab < self.vocab_size:
            raise RuntimeError(f"logits have {vocab} columns, the tokenizer {self.vocab_size}")
        if scores.device.type == "cuda":
            with torch.cuda.device(scores.device):  # the Triton kernel launches on the current device
                self._xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device, non_blocking=True))
        else:
            apply_bitmask_cpu(scores, self.bitmask)
        self.mask_seconds += time.perf_counter() - t0
        return scores


def apply_bitmask_cpu(scores: torch.Tensor, bitmask: torch.Tensor) -> None:
    """CPU version of xgrammar's bitmask application (its CPU kernel loops per row, slowly):
    bit ``j`` of int32 word ``w`` allows token ``32 * w + j``; disallowed logits become -inf."""
    import numpy as np

    B, V = scores.shape
    words = bitmask[:B].contiguous().numpy().view(np.uint8)
    allowed = np.unpackbits(words, axis=1, count=V, bitorder="little").view(np.bool_)
    scores.masked_fill_(~torch.from_numpy(allowed), float("-inf"))
