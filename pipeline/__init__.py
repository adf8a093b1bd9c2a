"""latent-verbalizer: per-layer captions of a CoCa vision encoder, labelled by an LLM."""

__version__ = "0.1.0"
