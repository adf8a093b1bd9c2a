"""Constrained, batched, prefix-cached generation with the offline tiny-random-llama (fp32)."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
import xgrammar as xgr

from latent_verbalizer.components.categorize.answers import parse_answer


def _run(gen, suffixes, batch_size):
    out = {}
    for idx, answers in gen.generate(suffixes, batch_size):
        for i, a in zip(idx, answers):
            out[i] = a
    return [out[i] for i in range(len(suffixes))]


def test_every_answer_valid_with_listed_labels(tiny, sample):
    """A random model under the grammar: every answer parses, has 1..max parts, 1..max labels
    per part, every label in the list, and ends by itself before max_new_tokens."""
    captions = sample(256)
    answers = _run(tiny.generator(), tiny.suffixes(captions), 64)
    labels, lim = set(tiny.ls.labels), tiny.ls.limits
    for cap, a in zip(captions, answers):
        assert a.complete, cap
        parts, status = parse_answer(tiny.tok.decode(a.token_ids), cap, labels)
        assert set(status.split(";")) <= {"ok", "part_not_in_caption", "answer_limit"}, (cap, status)
        assert 1 <= len(parts) <= lim.max_parts
        for p in parts:
            assert 1 <= len(p.labels) <= lim.max_labels and set(p.labels) <= labels
            assert 1 <= len(p.text) <= lim.max_part_chars and p.text.isprintable() and p.text == p.text.strip()


def test_batched_prefix_cached_equals_one_by_one(tiny, sample):
    """Same tokens as one call per caption through transformers' own ``generate`` (full
    prompt, no cache reuse, no padding) with xgrammar's stock HF logits processor."""
    captions = sample(10, layers=[1, 9, 17, 23]) + ["a", "red red red red red red red red red red red red red red"]
    ours = _run(tiny.generator(), tiny.suffixes(captions), 4)
    for cap, a in zip(captions, ours):
        ids = torch.tensor([tiny.prompt.full_ids(tiny.tok, cap)])
        ref = tiny.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=tiny.max_new,
                                  logits_processor=[xgr.contrib.hf.LogitsProcessor(tiny.grammar)],
                                  eos_token_id=tiny.stops, pad_token_id=tiny.tok.pad_token_id)[0, ids.shape[1]:].tolist()
        assert ref[-1] in tiny.stops
        assert a.token_ids == ref[:-1], cap


def test_without_prefix_cache_same_tokens(tiny, sample):
    captions = sample(6, layers=[4, 20])
    cached = _run(tiny.generator(), tiny.suffixes(captions), 3)
    plain = _run(tiny.generator(use_prefix_cache=False), tiny.suffixes(captions), 3)
    assert [a.token_ids for a in cached] == [a.token_ids for a in plain]


def _fail_batches_over(model, n: int, message: str, sizes: list[int]):
    """A forward hook on the model's first decoder layer: a batch of more than ``n`` rows fails
    with ``RuntimeError(message)``, as cuBLAS reports a failed allocation (not torch.OutOfMemoryError)."""
    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        sizes.append(hidden.shape[0])
        if hidden.shape[0] > n:
            raise RuntimeError(message)

    return model.model.layers[0].register_forward_pre_hook(hook, with_kwargs=True)


CUBLAS_ALLOC_FAILED = "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"


def test_allocation_failures_halve_the_batch(tiny, sample):
    """A cuBLAS allocation failure (a RuntimeError) in the model's forward halves the batch like
    torch's OutOfMemoryError; the answers equal those of a GPU that holds the whole batch."""
    captions = sample(10, layers=[6, 22])
    unconstrained = _run(tiny.generator(), tiny.suffixes(captions), 8)
    gen, sizes = tiny.generator(), []
    gen.prefix_cache()                          # the one-row prefix pass fits
    handle = _fail_batches_over(tiny.model, 2, CUBLAS_ALLOC_FAILED, sizes)
    try:
        answers = _run(gen, tiny.suffixes(captions), 8)
        assert sizes[:2] == [8, 4] and gen.stats.ooms == 2
        assert max(gen.stats.batch_sizes) == 2 and sum(gen.stats.batch_sizes) == 10
        assert [a.token_ids for a in answers] == [a.token_ids for a in unconstrained]

        full = tiny.generator()
        full.prefix_cache()
        handle.remove()
        handle = _fail_batches_over(tiny.model, 0, CUBLAS_ALLOC_FAILED, [])
        with pytest.raises(torch.OutOfMemoryError, match="batch size 1.*CUBLAS_STATUS_ALLOC_FAILED"):
            _run(full, tiny.suffixes(captions[:2]), 2)
    finally:
        handle.remove()


def test_other_runtime_errors_are_not_taken_for_out_of_memory(tiny, sample):
    gen = tiny.generator()
    gen.prefix_cache()
    handle = _fail_batches_over(tiny.model, 2, "mat1 and mat2 shapes cannot be multiplied (8x64 and 32x64)", [])
    try:
        with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
            _run(gen, tiny.suffixes(sample(4, layers=[6])), 4)
        assert gen.stats.ooms == 0
    finally:
        handle.remove()


def test_cache_reaches_a_forward_that_names_it_past_key_values(tiny, sample):
    """The real model under transformers' older calling convention (the cache is ``past_key_values``,
    unknown keywords are swallowed): the prefix cache still reaches it, same tokens as usual."""
    from latent_verbalizer.components.categorize.llm.generate import Generator

    model = copy.deepcopy(tiny.model)
    real = type(model)
    own = "cache" if "cache" in inspect.signature(real.forward).parameters else "past_key_values"   # the real name

    class PastKeyValuesNamed(real):
        def forward(self, *args, past_key_values=None, **kwargs):
            kwargs.pop("cache", None)
            return real.forward(self, *args, **{own: past_key_values}, **kwargs)

    model.__class__ = PastKeyValuesNamed
    captions = sample(6, layers=[4, 20])
    usual = _run(tiny.generator(), tiny.suffixes(captions), 3)
    old_style = Generator(model, tiny.prompt.prefix_ids, tiny.grammar, tiny.stops, tiny.tok.pad_token_id, tiny.max_new)
    assert [a.token_ids for a in _run(old_style, tiny.suffixes(captions), 3)] == [a.token_ids for a in usual]
