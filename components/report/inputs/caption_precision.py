"""Which numeric precision decoded the captions, read from the captions' provenance, and
whether that deviates from the original study's method (it decoded in fp32)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ...common.precision import parse_dtype

PRECISION_KEY = "precision"             # captions metadata: parameters.precision (the caption step's)
AGREEMENT_KEY = "fp32_agreement"        # optional: how closely this precision's captions matched fp32's


@dataclass
class CaptionPrecision:
    text: str          # one sentence for the page header and the summary
    deviation: bool    # True: not the study's fp32 method (or not recorded)


def _parameter(meta: dict, key: str):
    params = meta.get("parameters") if isinstance(meta.get("parameters"), dict) else {}
    return params.get(key, meta.get(key))


def is_study_precision(name: str) -> bool:
    """float32 in any spelling of the project's one dtype vocabulary (``common/precision.py``): the study's method."""
    try:
        return parse_dtype(name) == "float32"
    except ValueError:
        return False


def _describe(agreement) -> str:
    if isinstance(agreement, dict):
        return ", ".join(f"{k} {v}" for k, v in agreement.items())
    return agreement if isinstance(agreement, str) else json.dumps(agreement)


def caption_precision(captions_meta: list[dict]) -> CaptionPrecision:
    """The header's statement of the caption precision (every captions file's metadata)."""
    precisions = sorted({str(p) for p in (_parameter(m, PRECISION_KEY) for m in captions_meta) if p is not None})
    if not precisions:
        return CaptionPrecision("caption precision: not recorded in the captions' metadata, so it cannot be "
                                "checked against the study's fp32 method", True)
    if len(precisions) > 1:
        return CaptionPrecision(f"caption precision: mixed ({', '.join(precisions)}) across the captions files; "
                                "the study decoded every caption in fp32", True)
    precision = precisions[0]
    if is_study_precision(precision):
        return CaptionPrecision(f"captions decoded in {precision}, the study's method", False)
    agreements = [a for a in (_parameter(m, AGREEMENT_KEY) for m in captions_meta) if a is not None]
    measured = (f"; measured agreement with fp32: {_describe(agreements[0])}" if agreements else
                "; its agreement with fp32 was not measured for these captions")
    return CaptionPrecision(f"captions decoded in {precision}: a deviation from the study's fp32 method"
                            f"{measured}", True)
