"""The KV cache's argument name, read from a forward's signature (``hf_cache_kwarg``).

That the name reaches the model in practice, decoding exactly, is checked per family in
``components/caption/tests/test_hf_families.py`` (section 6: a real model whose forward takes
``past_key_values``) and, on the oldest transformers declared, by ``scripts/check_floors.sh``.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from latent_verbalizer.components.common.model_families import load_model
from latent_verbalizer.components.common.model_families.hf_cache_kwarg import cache_kwarg


@pytest.mark.parametrize("name", ["tiny-random-blip", "tiny-random-vit-gpt2", "tiny-random-llava"])
def test_each_familys_decoding_forward_names_its_cache(name):
    loaded = load_model(name)
    module = loaded.model if name == "tiny-random-llava" else loaded.text_decoder()
    kwarg = cache_kwarg(module)
    parameters = inspect.signature(module.forward).parameters
    assert kwarg in ("cache", "past_key_values") and parameters[kwarg].kind is not inspect.Parameter.VAR_KEYWORD
    # the newer name wins where a forward takes both
    assert kwarg == ("cache" if "cache" in parameters else "past_key_values")


def test_older_name_is_found():
    def forward(input_ids, past_key_values=None, use_cache=None, **kwargs):
        return input_ids

    assert cache_kwarg(forward) == "past_key_values"


def test_forward_naming_neither_is_refused():
    """A forward that would take the cache only through ``**kwargs`` (and may drop it) is refused, named."""

    class KwargsOnly(torch.nn.Module):
        def forward(self, input_ids, **kwargs):
            return input_ids

    with pytest.raises(TypeError, match=r"KwargsOnly\.forward takes no KV cache argument by name"):
        cache_kwarg(KwargsOnly())
