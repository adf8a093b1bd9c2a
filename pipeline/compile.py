"""Compile the pipeline to the YAML users upload, reproducibly (the committed file must equal a fresh compile)."""

import os
from typing import Optional

from components.common.images import DEFAULT_REGISTRY, DEFAULT_TAG, component_image

COMPILED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "latent_verbalizer.yaml")


def compile_pipeline(output: str = COMPILED, registry: Optional[str] = None, tag: Optional[str] = None,
                     parallelism: int = 4) -> str:
    from kfp import compiler

    from pipeline.pipeline import build_pipeline

    image = component_image(registry or DEFAULT_REGISTRY, tag or DEFAULT_TAG)
    compiler.Compiler().compile(build_pipeline(image=image, parallelism=parallelism), output)
    return output
