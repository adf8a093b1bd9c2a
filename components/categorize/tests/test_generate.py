"""Constrained, batched, prefix-cached generation with the offline tiny-random Llama (fp32)."""

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


def test_out_of_memory_halves_the_batch(tiny, sample, monkeypatch):
    captions = sample(10, layers=[6, 22])
    calls = []
    gen = tiny.generator()
    real_batch = gen.generate_batch

    def small_gpu_batch(suffixes):       # a GPU that only holds 2 answers at a time
        calls.append(len(suffixes))
        if len(suffixes) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_batch(suffixes)

    monkeypatch.setattr(gen, "generate_batch", small_gpu_batch)
    answers = _run(gen, tiny.suffixes(captions), 8)
    assert calls[:3] == [8, 4, 2] and gen.stats.ooms == 2
    assert max(gen.stats.batch_sizes) == 2 and sum(gen.stats.batch_sizes) == 10
    assert [a.token_ids for a in answers] == [a.token_ids for a in _run(tiny.generator(), tiny.suffixes(captions), 8)]

    def no_memory(suffixes):
        raise torch.OutOfMemoryError("injected")

    full = tiny.generator()
    monkeypatch.setattr(full, "generate_batch", no_memory)
    with pytest.raises(RuntimeError, match="batch size 1"):
        _run(full, tiny.suffixes(captions[:2]), 2)


def test_cache_reaches_a_forward_that_names_it_past_key_values(tiny, sample):
    """The real model under transformers' older calling convention (the cache is ``past_key_values``,
    unknown keywords are swallowed): the prefix cache still reaches it, same tokens as usual."""
    from latent_verbalizer.components.categorize.generate import Generator

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
