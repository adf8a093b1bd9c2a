"""Categorize on a GPU (``pytest -m gpu``): xgrammar's GPU mask against its CPU mask, the
batched prefix-cached path against one call per caption (fp32 on CUDA), two processes
sharing one GPU against one process, and a real out-of-memory. tiny-random-llama (the
real Llama-3 tokenizer and answer grammar), captions written here (no reference data)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import xgrammar as xgr

from latent_verbalizer.components.categorize.grammar import GrammarLogitsProcessor
from latent_verbalizer.components.categorize.llm.generate import Generator
from latent_verbalizer.components.common.contracts import LABELS_SCHEMA
from latent_verbalizer.components.common.precision import exact_float32_math
from latent_verbalizer.components.common.tables import read_table
from tests.gpu import GPU_ONLY, capped_gpu_memory, peak_extra_bytes, report

REPO = Path(__file__).resolve().parents[3]


pytestmark = GPU_ONLY

CAPTIONS = [
    "a red double decker bus driving down a street", "a man riding a wave on top of a surfboard",
    "two cats sleeping on a couch next to a remote", "a plate of food with broccoli and rice",
    "a kitchen with wooden cabinets and a white stove", "a black and white photo of a clock tower",
    "a giraffe standing next to a tree in a zoo", "a person holding an umbrella in the rain",
    "a bowl of oranges and bananas on a table", "a group of people flying kites on a beach",
    "a a a a a a a a", "the the the of of a", "blurry blurry image of a", "a close up of a close up of a",
    "a baseball player swinging a bat at a ball", "a small dog wearing a green sweater",
]


def run(gen: Generator, suffixes, batch_size: int) -> list:
    answers = {}
    for indices, batch in gen.generate(suffixes, batch_size):
        answers.update(zip(indices, batch))
    return [answers[i] for i in range(len(suffixes))]


@pytest.fixture(scope="module")
def on_cuda(tiny):
    """The tiny-random-llama of the CPU tests, copied to the GPU in float32 (TF32 off)."""
    exact_float32_math()
    return copy.deepcopy(tiny.model).to("cuda")


def generator(tiny, model) -> Generator:
    return Generator(model, tiny.prompt.prefix_ids, tiny.grammar, tiny.stops, tiny.tok.pad_token_id, tiny.max_new)


def test_gpu_mask_gives_the_same_tokens_as_the_cpu_mask(tiny):
    """Constrained greedy steps over random logits, masked on the CPU and with xgrammar's
    Triton kernel on the GPU side by side: same masked logits, same tokens, every step."""
    rows, vocab = 8, tiny.model.config.vocab_size
    on_cpu, on_gpu = GrammarLogitsProcessor([tiny.grammar] * rows), GrammarLogitsProcessor([tiny.grammar] * rows)
    generator_rng = torch.Generator().manual_seed(0)
    last = torch.zeros(rows, 1, dtype=torch.long)
    steps = 0
    for _ in range(40):  # rows whose answer ended keep their last mask on both sides
        scores = torch.randn(rows, vocab, generator=generator_rng)
        masked_cpu = on_cpu(last, scores.clone())
        masked_gpu = on_gpu(last.cuda(), scores.cuda()).cpu()
        assert torch.equal(torch.isinf(masked_cpu), torch.isinf(masked_gpu))
        assert torch.equal(masked_cpu, masked_gpu)
        last = masked_cpu.argmax(-1, keepdim=True)
        assert torch.equal(last, masked_gpu.argmax(-1, keepdim=True))
        steps += 1
    assert steps == 40
    report("categorize: xgrammar mask, GPU vs CPU", [f"{steps} constrained steps x {rows} rows: identical masks and tokens"])


def test_batched_prefix_cached_path_equals_one_call_per_caption_fp32_on_cuda(tiny, on_cuda):
    ours = run(generator(tiny, on_cuda), tiny.suffixes(CAPTIONS), 4)
    for caption, answer in zip(CAPTIONS, ours):
        ids = torch.tensor([tiny.prompt.full_ids(tiny.tok, caption)], device="cuda")
        reference = on_cuda.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=tiny.max_new,
                                     logits_processor=[xgr.contrib.hf.LogitsProcessor(tiny.grammar)],
                                     eos_token_id=tiny.stops, pad_token_id=tiny.tok.pad_token_id)[0, ids.shape[1]:].tolist()
        assert reference[-1] in tiny.stops
        assert answer.token_ids == reference[:-1], caption


def categorize_cli(captions: list[str], out: str, labels: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "latent_verbalizer.pipeline.cli", "categorize", "--captions", *captions,
                             "--out", out, "--model", "tiny-random-llama", "--labels", labels, "--gpus", "1",
                             "--dtype", "float32", "--batch-size", "4"], cwd=REPO)


def test_two_processes_on_one_gpu_answer_as_one_process(tmp_path, small_labels):
    """The closest one GPU gets to the multi-GPU path: two labelling processes share the GPU
    at the same time, each with half of the captions; together they answer as one process."""
    halves = []
    for name, part in (("a", CAPTIONS[::2]), ("b", CAPTIONS[1::2])):
        path = tmp_path / f"caps_{name}.json"
        path.write_text(json.dumps({"layer_0": part}))
        halves.append(str(path))
    both = [categorize_cli([half], str(tmp_path / f"out{i}"), small_labels) for i, half in enumerate(halves)]
    assert [p.wait(timeout=600) for p in both] == [0, 0]
    assert categorize_cli(halves, str(tmp_path / "one"), small_labels).wait(timeout=600) == 0

    def answers(folder):
        table = read_table(str(folder / "labels.parquet"), LABELS_SCHEMA).to_pylist()
        return {row["caption"]: row["parts"] for row in table}

    together = {**answers(tmp_path / "out0"), **answers(tmp_path / "out1")}
    alone = answers(tmp_path / "one")
    assert set(alone) == set(CAPTIONS) and together == alone


def test_real_out_of_memory_backs_off_and_matches_an_uncapped_run(tiny, on_cuda):
    suffixes = tiny.suffixes(CAPTIONS * 4)
    per4 = peak_extra_bytes(lambda: run(generator(tiny, on_cuda), suffixes[:4], 4))[0]
    gen = generator(tiny, on_cuda)
    with capped_gpu_memory(int(per4 * 2.5)):
        capped = run(gen, suffixes, 64)
    final = gen.batch_size_now
    assert gen.stats.ooms >= 1 and final < 64 and sum(gen.stats.batch_sizes) == len(suffixes)
    plain = run(generator(tiny, on_cuda), suffixes, final)
    assert [a.token_ids for a in capped] == [a.token_ids for a in plain]
    report("categorize: real out-of-memory", [f"batch 64 -> {final} under the cap ({gen.stats.ooms} out-of-memory errors); "
                                              "answers identical to an uncapped run at that batch size"])
