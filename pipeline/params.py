"""Run parameters from a command line (``--params``), matched to the types the pipeline declares.

``--params categorize_gpus=4`` parses as the number 4, but ``categorize_gpus`` is a STRING
parameter: KFP's driver resolves pod-spec fields (GPU count, accelerator type) with
GetStringValue(), which gives "" for a number, and then leaves the GPU limit out without an
error. So a number given for a STRING parameter is sent as its text.
"""


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
