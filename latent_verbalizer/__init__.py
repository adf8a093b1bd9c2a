"""latent-verbalizer: per-layer captions of a CoCa vision encoder, labelled by an LLM.

Installed, the repository's top-level folders live under this one name:
``latent_verbalizer.pipeline`` (the KFP pipeline, compile, local run, submit, the
``lverb`` CLI) and ``latent_verbalizer.components.*`` (one package per step, plus
``common``).
"""

from .components.common.version import __version__

__all__ = ["__version__"]
