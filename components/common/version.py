"""The installed package's version, from its metadata (one place: pyproject.toml)."""

from importlib import metadata

try:
    __version__ = metadata.version("latent-verbalizer")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
