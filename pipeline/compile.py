"""Compile the pipeline to the YAML users upload, reproducibly (the committed file must equal a fresh compile)."""

import ast
import json
import os
import re
from typing import Optional

from .container_image import DEFAULT_REGISTRY, DEFAULT_TAG, component_image

# realpath: the checkout also reaches this file through latent_verbalizer/pipeline (a symlink to pipeline/)
COMPILED = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "latent_verbalizer.yaml")


def compile_pipeline(output: str = COMPILED, registry: Optional[str] = None, tag: Optional[str] = None,
                     parallelism: int = 4) -> str:
    from kfp import compiler

    from latent_verbalizer.pipeline.pipeline import build_pipeline

    image = component_image(registry or DEFAULT_REGISTRY, tag or DEFAULT_TAG)
    compiler.Compiler().compile(build_pipeline(image=image, parallelism=parallelism), output)
    with open(output) as f:
        text = _canonical_header(f.read())
    faults = lint_compiled(text)
    if faults:
        os.remove(output)
        raise ValueError("the compiled pipeline breaks rules of KFP's backend (nothing written):\n  " + "\n  ".join(faults))
    with open(output, "w") as f:
        f.write(text)
    return output


def lint_compiled(text: str) -> list[str]:
    """The faults ``yaml_lint`` finds in a compiled pipeline YAML (both documents)."""
    import yaml

    from .pipeline import WEIGHTS_MOUNT
    from .yaml_lint import lint

    docs = list(yaml.safe_load_all(text))
    return lint(docs[0], docs[1] if len(docs) > 1 else None, mount_path=WEIGHTS_MOUNT)


_DEFAULT_IN_HEADER = re.compile(r"^(#.*\[Default: )(.*)(\])$", re.M)


def _canonical_header(text: str) -> str:
    """KFP's header comment prints dict/list defaults in protobuf map order, which varies
    between processes; print them with sorted keys so a compile is byte-for-byte reproducible."""

    def canonical(m: re.Match) -> str:
        try:
            value = ast.literal_eval(m.group(2))
        except (ValueError, SyntaxError):
            return m.group(0)
        if not isinstance(value, (dict, list)):
            return m.group(0)
        return m.group(1) + json.dumps(value, sort_keys=True) + m.group(3)

    return _DEFAULT_IN_HEADER.sub(canonical, text)
