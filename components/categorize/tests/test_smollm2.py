"""SmolLM2-135M-Instruct (real weights, offline GGUF) end to end through ``lverb categorize``."""

from __future__ import annotations

import json

import pytest

from latent_verbalizer.components.common.contracts import AGGREGATE_SCHEMA, LABELS_SCHEMA, read_table

from .test_run import write_captions


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

    from latent_verbalizer.components.categorize.llm_loader import SMOLLM2, load_model
    from latent_verbalizer.components.common.offline_models import offline_path

    try:
        gguf = offline_path(SMOLLM2)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    monkeypatch.setenv("LVERB_MODEL_CACHE", str(tmp_path / "cache"))
    net, tok, _ = load_model(SMOLLM2, torch.float32)
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
    load_model(SMOLLM2, torch.float32)                       # the second load reuses the folder
    assert [p.name for p in (tmp_path / "cache" / "converted").iterdir()] == [converted[0].name]
