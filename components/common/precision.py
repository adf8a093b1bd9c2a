"""Numeric precision: the one dtype vocabulary of the CLI and the pipeline parameters, and
the exact float32 math of the study's method.

Vocabulary: ``float32``, ``bfloat16``, ``float16`` (torch's names, also the features'
``dtype`` field). The short spellings ``fp32``, ``bf16`` and ``fp16`` are accepted as input
and always stored in the long form, so a table's metadata reads the same whichever was typed.
Torch is imported only where it is used: the CLI parses the vocabulary without loading it.
"""

from __future__ import annotations

DTYPES = ("float32", "bfloat16", "float16")
ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def parse_dtype(value: str, allowed: tuple[str, ...] = DTYPES, what: str = "--dtype") -> str:
    """The canonical name of a dtype given in the vocabulary, or an error naming ``what``
    and the names it takes."""
    name = ALIASES.get(str(value).strip().lower(), str(value).strip().lower())
    if name not in allowed:
        raise ValueError(f"{what} {value!r}: use one of {', '.join(allowed)} "
                         f"(or {', '.join(k for k, v in ALIASES.items() if v in allowed)})")
    return name


def torch_dtype(value: str):
    """The ``torch.dtype`` of a name in the vocabulary."""
    import torch

    return getattr(torch, parse_dtype(value))


def _fp32_backends() -> dict:
    """The places where PyTorch may compute float32 as TF32 (Ampere and newer GPUs)."""
    import torch

    return {"matmul": torch.backends.cuda.matmul, "cudnn_conv": torch.backends.cudnn.conv,
            "cudnn_rnn": torch.backends.cudnn.rnn}


def exact_float32_math() -> dict:
    """Turn TF32 off for matmul and cuDNN, so float32 is computed as float32 (the study's
    exact path), and return what is set (for the provenance).

    TF32 rounds the inputs of a float32 matrix product to a 10-bit mantissa on Ampere and
    newer GPUs; a near-tie between two tokens then resolves differently. Only PyTorch's
    ``fp32_precision`` API is used: mixing it with the legacy ``allow_tf32`` flags is an error.
    """
    import torch

    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch < 2.9: only the legacy flags
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        return float32_math()
    for backend in _fp32_backends().values():
        backend.fp32_precision = "ieee"
    return float32_math()


def float32_math() -> dict:
    """How float32 is computed now: ``{"tf32": bool, "fp32_precision": {...}}``."""
    import torch

    if not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        legacy = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
        return {"tf32": any(legacy.values()), "fp32_precision": {k: "tf32" if v else "ieee" for k, v in legacy.items()}}
    settings = {name: backend.fp32_precision for name, backend in _fp32_backends().items()}
    tf32 = any(v == "tf32" for v in settings.values()) or torch.get_float32_matmul_precision() != "highest"
    return {"tf32": tf32, "fp32_precision": settings}


def dtype_argument(allowed: tuple[str, ...] = DTYPES, what: str = "--dtype"):
    """An argparse ``type=`` that parses the vocabulary (usage error naming the choices otherwise)."""
    import argparse

    def parse(value: str) -> str:
        try:
            return parse_dtype(value, allowed, what)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = what.lstrip("-")
    return parse
