"""SmolLM2-135M-Instruct (real weights, offline GGUF) end to end through ``lverb categorize``."""

from __future__ import annotations

import json

import pytest

from latent_verbalizer.components.common.contracts import AGGREGATE_SCHEMA, LABELS_SCHEMA
from latent_verbalizer.components.common.tables import read_table
from tests.captions_by_layer import write_captions


def test_smollm2_end_to_end(reference_captions, small_labels, tmp_path, capsys):
    """With the small answer limits (3 parts) so that CPU decoding stays within seconds."""
    from latent_verbalizer.components.common.offline_models import offline_path

    try:
        offline_path("smollm2-135m")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    from latent_verbalizer.pipeline.cli import main

    caps = [reference_captions["layer_23"][i] for i in (0, 1, 2)] + [reference_captions["layer_3"][0], reference_captions["layer_23"][0]]
    captions = str(tmp_path / "caps.parquet")
    write_captions(captions, {23: caps[:3] + caps[4:], 3: caps[3:4]})
    out = str(tmp_path / "out")
    assert main(["categorize", "--captions", captions, "--out", out, "--model", "smollm2-135m", "--batch-size", "4",
                 "--labels", small_labels]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["unique_captions"] == 4
    labels = read_table(f"{out}/labels.parquet", LABELS_SCHEMA).to_pylist()
    from latent_verbalizer.components.categorize.labelset import load_labelset

    listed = set(load_labelset().labels)
    assert len(labels) == 4
    for row in labels:
        assert row["parts"] and all(1 <= len(p["labels"]) <= 2 and set(p["labels"]) <= listed for p in row["parts"])
        assert set(row["status"].split(";")) <= {"ok", "part_not_in_caption", "answer_limit"}
        assert "SmolLM2" in row["model"]
    # a real instruct model copies most parts from the caption
    parts = [p["text"] for r in labels for p in r["parts"]]
    assert sum(any(p in r["caption"] for r in labels) for p in parts) >= len(parts) // 2
    assert read_table(f"{out}/aggregate.parquet", AGGREGATE_SCHEMA).num_rows == 2 * 35
    print(json.dumps(labels[0]))


def test_converted_folder_equals_the_gguf_file(tmp_path, monkeypatch):
    """The offline SmolLM2 is converted from GGUF once into the cache: same tokens, same logits."""
    import os

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from latent_verbalizer.components.categorize.llm.loading import SMOLLM2, load_llm
    from latent_verbalizer.components.common.offline_models import offline_path

    try:
        gguf = offline_path(SMOLLM2)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    monkeypatch.setenv("LVERB_MODEL_CACHE", str(tmp_path / "cache"))
    net, tok, _ = load_llm(SMOLLM2, torch.float32)
    converted = [p for p in (tmp_path / "cache" / "converted").iterdir() if p.name.startswith(SMOLLM2)]
    assert len(converted) == 1 and (converted[0] / "model.safetensors").exists()
    d, f = os.path.split(gguf)
    ref_tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    ref = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    text = "a dog, on a red sofa! ㅋㅋ"
    assert tok.encode(text) == ref_tok.encode(text) and tok.chat_template == ref_tok.chat_template
    ids = torch.tensor([ref_tok.encode(text)])
    with torch.inference_mode():
        assert torch.equal(net(ids).logits, ref(ids).logits)
    load_llm(SMOLLM2, torch.float32)                       # the second load reuses the folder
    assert [p.name for p in (tmp_path / "cache" / "converted").iterdir()] == [converted[0].name]


@pytest.fixture(scope="module")
def smollm2(small_labels):
    """SmolLM2 (fp32, CPU) with the small label file's prompt and grammar: (generator, tokenizer, label set, prompt)."""
    import torch

    from latent_verbalizer.components.categorize.answers import AnswerBounds, max_new_tokens
    from latent_verbalizer.components.categorize.grammar import compile_answer_grammar, stop_token_ids
    from latent_verbalizer.components.categorize.labelset import load_labelset
    from latent_verbalizer.components.categorize.llm.generate import Generator
    from latent_verbalizer.components.categorize.llm.loading import SMOLLM2, load_llm
    from latent_verbalizer.components.categorize.prompt import split_prompt
    from latent_verbalizer.components.common.offline_models import offline_path

    try:
        offline_path(SMOLLM2)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    net, tok, _ = load_llm(SMOLLM2, torch.float32)
    ls = load_labelset(small_labels)
    bounds = AnswerBounds(ls.limits.max_parts, ls.limits.max_part_chars)
    prompt = split_prompt(tok, ls)
    stops = stop_token_ids(tok, net)
    grammar = compile_answer_grammar(tok, ls, net.config.vocab_size, stops, bounds)
    pad = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    return Generator(net, prompt.prefix_ids, grammar, stops, pad, max_new_tokens(ls, bounds)), tok, ls, prompt


def test_a_row_at_its_token_bound_stops_alone(smollm2, reference_captions):
    """Rows with a tiny token bound stop there (incomplete), the others in the same batch
    finish their answers and parse; a batch whose rows all have the tiny bound decodes exactly
    that many steps (the schema's bound, hundreds of tokens, no longer keeps it running)."""
    from latent_verbalizer.components.categorize.answers import parse_answer

    generator, tok, ls, prompt = smollm2
    caps = [reference_captions["layer_23"][i] for i in range(4)]
    suffixes = [prompt.suffix_ids(tok, c) for c in caps]
    tiny_bound = 5
    limits = [tiny_bound, 10_000, tiny_bound, 10_000]
    steps0 = generator.stats.steps
    ((idx, answers),) = list(generator.generate(suffixes, 4, limits))
    assert idx == [0, 1, 2, 3]
    for cap, answer, limit in zip(caps, answers, limits):
        if limit == tiny_bound:
            assert not answer.complete and len(answer.token_ids) == tiny_bound
        else:
            assert answer.complete and tiny_bound < len(answer.token_ids) < generator.max_new_tokens
            parts, status = parse_answer(tok.decode(answer.token_ids), cap, set(ls.labels))
            assert parts and set(status.split(";")) <= {"ok", "part_not_in_caption"}, (cap, status)
    assert generator.stats.steps - steps0 == max(len(a.token_ids) for a in answers) + 1     # + the stop token

    steps0 = generator.stats.steps
    ((_, answers),) = list(generator.generate(suffixes, 4, [tiny_bound] * 4))
    assert generator.stats.steps - steps0 == tiny_bound
    assert all(not a.complete and len(a.token_ids) == tiny_bound for a in answers)


def test_answers_cut_at_the_token_bound_are_flagged_answer_limit(reference_captions, small_labels, tmp_path, monkeypatch):
    """Through ``run_categorize``: a caption whose token bound is tiny (here the cap lowered to
    6) gets status ``answer_limit`` with 6 new tokens stored; the plan used the same bound."""
    from latent_verbalizer.components.categorize import answers as answers_module
    from latent_verbalizer.components.categorize.answer_store import STORED_ANSWER_SCHEMA
    from latent_verbalizer.components.categorize.categorize import run_categorize
    from latent_verbalizer.components.common.offline_models import offline_path

    try:
        offline_path("smollm2-135m")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    monkeypatch.setattr(answers_module, "ANSWER_TOKENS_CAP", 6)
    caps = [reference_captions["layer_23"][i] for i in (0, 1)]
    captions = str(tmp_path / "caps.parquet")
    write_captions(captions, {23: caps})
    out = str(tmp_path / "out")
    summary = run_categorize([captions], out, model="smollm2-135m", labels_uri=small_labels, batch_size=2)
    assert summary["plan_answer_tokens"] == 6
    labels = read_table(f"{out}/labels.parquet", LABELS_SCHEMA).to_pylist()
    assert len(labels) == 2 and all("answer_limit" in row["status"].split(";") for row in labels)
    stored = [read_table(u, STORED_ANSWER_SCHEMA).to_pylist() for u in _store_files(out)]
    assert sorted(r["n_new_tokens"] for rows in stored for r in rows) == [6, 6]


def _store_files(out: str) -> list[str]:
    from latent_verbalizer.components.common import storage

    return [u for u in storage.list_uris(f"{out}/answers") if u.endswith(".parquet")]
