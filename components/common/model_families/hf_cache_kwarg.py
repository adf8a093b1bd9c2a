"""How to hand a Hugging Face model its KV cache, whatever the installed transformers calls it.

transformers names a forward's cache argument ``cache`` from 5.24 on, ``past_key_values``
before. Most forwards also take ``**kwargs``, so passing the wrong name is no error: the cache
is silently dropped and every step decodes one token with no past (wrong text, nothing
raised). The name is therefore read from the forward's signature, and a forward that names
neither is refused rather than guessed at.
"""

from __future__ import annotations

import inspect

CACHE_ARGUMENT_NAMES = ("cache", "past_key_values")   # newest first


def cache_kwarg(model) -> str:
    """The name under which ``model``'s forward takes its KV cache (``model`` or its forward)."""
    forward = getattr(model, "forward", model)
    parameters = inspect.signature(forward).parameters
    for name in CACHE_ARGUMENT_NAMES:
        if name in parameters:
            return name
    owner = f"{type(model).__name__}.forward" if forward is not model else getattr(model, "__qualname__", repr(model))
    raise TypeError(f"{owner} takes no KV cache argument by name (neither of {CACHE_ARGUMENT_NAMES}); "
                    "a cache passed through **kwargs would be dropped without a word. Install a transformers "
                    "release this project supports (pyproject.toml) or report the model class.")


def cache_of(output):
    """The KV cache a forward returned (``output.cache`` from transformers 5.24, ``past_key_values`` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
