"""Whether a model runs on random weights, and the sentence that says so.

The shipped offline models (``tiny-random``, ``tiny-random-blip``, ...) and any model given
``--pretrained random`` have weights drawn from a seed: their captions say nothing about
what a trained encoder sees. Every output made from them says so (the CLIs, the report).
"""

from __future__ import annotations

RANDOM = "random"                 # the pretrained value of random weights
RANDOM_MODEL_PREFIX = "tiny-random"  # every shipped random model's name starts with it


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
