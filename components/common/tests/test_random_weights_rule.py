"""One rule makes the random weights of every family (common.random_weights.init_random_weights)."""

import torch
from torch import nn

from latent_verbalizer.components.common.random_weights import RANDOM_SEED, init_random_weights


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 4)
        self.norm = nn.LayerNorm(4)
        self.query = nn.Parameter(torch.ones(4))
        self.scale = nn.Parameter(torch.full((4,), 0.5))


def test_fan_in_matrices_zero_biases_identity_norms():
    model = Tiny()
    init_random_weights(model)
    assert model.proj.bias.abs().sum() == 0 and model.scale.abs().sum() == 0
    assert torch.equal(model.norm.weight, torch.ones(4)) and model.norm.bias.abs().sum() == 0
    assert 0.1 < model.proj.weight.std() * 8 ** 0.5 < 10          # unit scale after the fan-in
    assert torch.equal(model.query, torch.ones(4))                 # a 1-D parameter not named: left as a norm


def test_named_embeddings_are_drawn_and_the_seed_repeats():
    a, b = Tiny(), Tiny()
    init_random_weights(a, embeddings=("query",))
    init_random_weights(b, seed=RANDOM_SEED, embeddings=("query",))
    assert not torch.equal(a.query, torch.ones(4)) and a.query.abs().max() < 0.2
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_the_old_tiny_random_name_says_the_new_ones():
    import pytest

    from latent_verbalizer.components.common.model_families import model_n_layers

    with pytest.raises(ValueError, match="renamed: use tiny-random-coca .* or tiny-random-llama"):
        model_n_layers("tiny-random")
