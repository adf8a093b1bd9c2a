"""Run parameters from a command line (``--params``), matched to the types the pipeline declares.

``--params categorize_gpus=4`` parses as the number 4, but ``categorize_gpus`` is a STRING
parameter: KFP's driver resolves pod-spec fields (GPU count, accelerator type) with
GetStringValue(), which gives "" for a number, and then leaves the GPU limit out without an
error. So a number given for a STRING parameter is sent as its text.
"""

import json
import re

# a new ``key=value`` item starts after a comma only where a parameter name and ``=`` follow:
# ``extract_layers=0,5,23`` keeps its commas
_NEXT_ITEM = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)")


def parse_params(texts) -> dict:
    """``--params`` values (one text or a list, one per ``--params``) -> one dict.

    Each text is a JSON object or ``key=value,key=value``; a value may hold commas (a comma
    starts a new item only before ``name=``) and is converted where it parses as JSON.
    A key given twice, in one text or across several, is refused: which one was meant?
    """
    if texts is None:
        return {}
    out: dict = {}
    for text in [texts] if isinstance(texts, str) else texts:
        for key, value in _parse_one(text).items():
            if key in out:
                raise ValueError(f"--params: {key} is given twice ({out[key]!r} and {value!r}); give it once")
            out[key] = value
    return out


def _parse_one(text: str) -> dict:
    text = (text or "").strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--params: {text!r} is not valid JSON ({e})") from e
        if not isinstance(obj, dict):
            raise ValueError(f"--params: {text!r} is not a JSON object")
        return obj
    out: dict = {}
    for item in _NEXT_ITEM.split(text):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"--params: {item!r} is not key=value (e.g. --params extract_layers=0,5,23,"
                             "extract_model=coca_ViT-L-14)")
        if key in out:
            raise ValueError(f"--params: {key} is given twice ({out[key]!r} and {value!r}); give it once")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def match_parameter_types(params: dict, pipeline) -> dict:
    """``params`` with numbers turned into text where ``pipeline`` (a compiled or loaded KFP
    pipeline component) declares a String parameter; everything else unchanged."""
    inputs = pipeline.component_spec.inputs or {}
    out = {}
    for name, value in params.items():
        declared = inputs[name].type if name in inputs else None
        if declared == "String" and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        out[name] = value
    return out
