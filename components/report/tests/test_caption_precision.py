"""The caption precision the header states, in the project's one dtype vocabulary (common/precision.py)."""

from __future__ import annotations

import pytest

from latent_verbalizer.components.report.inputs.caption_precision import caption_precision


@pytest.mark.parametrize("recorded", ["float32", "fp32", "FP32", " float32 "])
def test_every_spelling_of_float32_is_the_studys_method(recorded):
    precision = caption_precision([{"parameters": {"precision": recorded}}])
    assert not precision.deviation and "the study's method" in precision.text


@pytest.mark.parametrize("recorded", ["bfloat16", "bf16", "float16", "int8"])
def test_anything_else_is_a_deviation(recorded):
    precision = caption_precision([{"parameters": {"precision": recorded}}])
    assert precision.deviation and f"captions decoded in {recorded}: a deviation" in precision.text
