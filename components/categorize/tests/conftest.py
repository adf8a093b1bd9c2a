"""Fixtures of the categorize tests: the study's reference data, a small-limits label file
(random models write answers up to the limits, so small limits keep CPU tests quick) and
the offline tiny-random-llama with its compiled answer grammar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[3]
REFERENCE = (REPO / ".." / "shared" / "reference").resolve()
DEFAULT_LABELS = REPO / "components" / "categorize" / "data" / "labels.yaml"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE / "caps_batch0.json").exists():
        pytest.skip(f"reference data of the original study not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture(scope="session")
def reference_captions(reference_dir) -> dict[str, list[str]]:
    return json.loads((reference_dir / "caps_batch0.json").read_text())


@pytest.fixture(scope="session")
def small_labels(tmp_path_factory) -> str:
    """The default labels and prompt with tighter answer limits (3 parts, 16 chars, 2 labels)."""
    data = yaml.safe_load(DEFAULT_LABELS.read_text())
    data["limits"] = {"max_parts": 3, "max_part_chars": 16, "max_labels": 2}
    for ex in data["examples"]:
        ex["parts"] = [dict(p, labels=p["labels"][:2]) for p in ex["parts"][:3]]
    path = tmp_path_factory.mktemp("labels") / "small_labels.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


class Tiny:
    """tiny-random-llama (fp32) with everything the generator needs; answers held to the small
    label file's caps (3 parts of up to 16 characters)."""

    def __init__(self, labels_uri: str):
        from latent_verbalizer.components.categorize.answers import AnswerBounds, max_new_tokens
        from latent_verbalizer.components.categorize.grammar import compile_answer_grammar, stop_token_ids
        from latent_verbalizer.components.categorize.labelset import load_labelset
        from latent_verbalizer.components.categorize.llm.loading import load_llm
        from latent_verbalizer.components.categorize.prompt import split_prompt

        self.model, self.tok, _ = load_llm("tiny-random-llama", torch.float32)
        self.ls = load_labelset(labels_uri)
        self.bounds = AnswerBounds(self.ls.limits.max_parts, self.ls.limits.max_part_chars)
        self.prompt = split_prompt(self.tok, self.ls)
        self.stops = stop_token_ids(self.tok, self.model)
        self.grammar = compile_answer_grammar(self.tok, self.ls, self.model.config.vocab_size, self.stops, self.bounds)
        self.max_new = max_new_tokens(self.ls, self.bounds)

    def generator(self, **kw):
        from latent_verbalizer.components.categorize.llm.generate import Generator

        return Generator(self.model, self.prompt.prefix_ids, self.grammar, self.stops, self.tok.pad_token_id, self.max_new, **kw)

    def suffixes(self, captions):
        return [self.prompt.suffix_ids(self.tok, c) for c in captions]


@pytest.fixture(scope="session")
def tiny(small_labels) -> Tiny:
    return Tiny(small_labels)


def sample_captions(reference_captions, n: int, layers=range(24)) -> list[str]:
    """n reference captions spread over the layers (gibberish of early layers and fluent late ones)."""
    layers = list(layers)
    out = []
    i = 0
    while len(out) < n:
        layer = layers[i % len(layers)]
        out.append(reference_captions[f"layer_{layer}"][(i // len(layers)) * 7 % 500])
        i += 1
    return out


@pytest.fixture(scope="session")
def sample(reference_captions):
    """``sample(n, layers=range(24))``: n reference captions (see ``sample_captions``)."""
    return lambda n, layers=range(24): sample_captions(reference_captions, n, layers)


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread():
    """One intra-op thread for these CPU tests (restored afterwards): on a small shared
    machine, OpenMP threads that wait for each other make tiny-model steps up to 40x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread_env(monkeypatch):
    """The same for the worker processes a test starts."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
