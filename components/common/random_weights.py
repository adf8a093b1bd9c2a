"""Random weights: how they are made, whether a model runs on them, and the sentence that says so.

The shipped offline models (``tiny-random-coca``, ``tiny-random-blip``, ...; their configs in
``model_configs/``) and any model given ``--pretrained random`` have weights drawn from a
seed (``init_random_weights``, the one rule for every family): their captions say nothing about
what a trained encoder sees. Every output made from them says so (the CLIs, the report).
"""

from __future__ import annotations

import os

RANDOM = "random"                 # the pretrained value of random weights
RANDOM_MODEL_PREFIX = "tiny-random"  # every shipped random model's name starts with it
RANDOM_SEED = 0
CONFIG_DIR = os.path.join(os.path.dirname(__file__), "model_configs")   # the shipped random models' configs


def init_random_weights(model, seed: int = RANDOM_SEED, embeddings: tuple[str, ...] = ()):
    """Deterministic random weights with unit-scale activations (fan-in scaling), so a random
    model's captions depend on the image the way a trained one's do. Matrices: normal, scaled by
    fan-in; 1-D parameters named in ``embeddings`` (name endings): normal x 0.02; biases and other
    1-D parameters: zero, except norm weights (all ones), which stay at identity.
    Returns the generator, for a family's own extra draws after these."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * p.shape[-1] ** -0.5)
            elif embeddings and name.endswith(embeddings):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            elif p.ndim == 1 and (name.endswith("bias") or not torch.all(p == 1)):
                p.zero_()
    return g


def is_random(model: str | None, pretrained: str | None) -> bool:
    """True for ``pretrained == "random"``, and for a shipped tiny-random model given no weights."""
    if pretrained:
        return str(pretrained).strip().lower() == RANDOM
    return bool(model) and str(model).startswith(RANDOM_MODEL_PREFIX)


def random_weights_warning(model: str | None, pretrained: str | None) -> str | None:
    """One line for a run's output when ``model``/``pretrained`` are random weights, else None."""
    if not is_random(model, pretrained):
        return None
    return (f"RANDOM WEIGHTS: {model} / {pretrained or RANDOM} is an untrained model; its captions say nothing "
            "about what a trained encoder sees (the study's model is coca_ViT-L-14 with its default weights)")


# Names of shipped random models that changed: the old one says what to use instead.
RENAMED_MODELS = {"tiny-random": "tiny-random-coca (the random CoCa, to caption) or tiny-random-llama "
                                 "(the random Llama, to label)"}


def check_not_renamed(model: str) -> None:
    """An error naming the new name when ``model`` is an old name of a shipped random model."""
    if model in RENAMED_MODELS:
        raise ValueError(f"model {model!r} was renamed: use {RENAMED_MODELS[model]}")
