"""The container images the components run in, pinned in one place.

``lverb compile --image-registry REG --image-tag TAG`` points the pipeline at images
built and pushed elsewhere (``make images``).
"""

from ..components.common.version import __version__

DEFAULT_REGISTRY = "ghcr.io/latent-verbalizer"
DEFAULT_TAG = __version__


def component_image(registry: str = DEFAULT_REGISTRY, tag: str = DEFAULT_TAG) -> str:
    if not tag or tag == "latest":
        raise ValueError("pin the image to a version tag (not 'latest'): pass --image-tag")
    return f"{registry.rstrip('/')}/latent-verbalizer:{tag}"
