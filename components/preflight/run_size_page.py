"""The run size as a Markdown page (the preflight step's artifact, which the Kubeflow UI shows)."""

from __future__ import annotations

import math
import os

from .run_size import RATES_FILE, MeasuredRates, RunSize

RESULTS = "benchmarks/RESULTS.md"


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _bytes(value: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value:,.0f} B"


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value >= 10 else f"{value:.3g}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:,.1f} min"


def distinct_estimate(size: RunSize, rates: MeasuredRates) -> tuple[int | None, str]:
    """(distinct captions to label, or None where no ratio was measured for the model; how it was worked out)."""
    measured = rates.distinct_ratio(size.plan.model)
    if measured is None:
        return None, (f"at most {_n(size.captions)}, one per caption: identical captions are labelled once, but no ratio "
                      f"of distinct captions is measured for {size.plan.model} to estimate how many are alike")
    ratio = measured["distinct"] / measured["captions"]
    estimate = math.ceil(size.captions * ratio)
    return estimate, (f"about {_n(estimate)}: {ratio:.1%} distinct, the ratio measured for {size.plan.model} on "
                      f"{measured['dataset']} ({_n(measured['distinct'])} of {_n(measured['captions'])} captions; "
                      f"{measured['source']}); at most {_n(size.captions)}")


def _sizes(size: RunSize, rates: MeasuredRates) -> list[str]:
    plan = size.plan
    images = (f"{_n(size.images)}" if size.images_exact else
              f"about {_n(size.images)} ({_n(size.first_shard_images)} in the first shard x {len(plan.shards)} shards; "
              "other shards may hold more or fewer)")
    _, answers = distinct_estimate(size, rates)
    return ["| what | how many |", "| --- | --- |",
            f"| shards | {_n(len(plan.shards))} |",
            f"| images | {images} |",
            f"| layers captioned | {len(plan.layers)} of {plan.n_layers} |",
            f"| (image, layer) captions | {_n(size.captions)} |",
            f"| features in storage | {_bytes(size.feature_bytes)}: {_n(size.captions)} x {size.tokens} tokens x "
            f"{size.width} wide x {plan.dtype} |",
            f"| answers to generate | {answers} (answers already in a shared storage prefix are not generated again) |"]


def _gpu_tasks(size: RunSize) -> list[str]:
    plan = size.plan
    n = len(plan.shards)
    at_once = min(n, plan.fan_out)
    return ["| step | tasks | GPUs each | at once |", "| --- | --- | --- | --- |",
            f"| extract | {_n(n)} (one per shard) | 1 | up to {at_once} (compiled fan-out {plan.fan_out}) |",
            f"| caption | {_n(n)} (one per shard) | 1 | up to {at_once} |",
            f"| categorize | {plan.partitions} (one per partition) | {plan.llm_gpus} | "
            f"{plan.partitions} ({plan.partitions * plan.llm_gpus} GPUs) |"]


def _time(size: RunSize, rates: MeasuredRates) -> list[str]:
    """Time and GPU-hours per step, from the rates measured on the run's GPU only."""
    plan = size.plan
    if plan.gpu is None:
        return [f"No time is given: the GPU steps' node selector does not name the GPU (`nvidia.com/gpu.product`), and "
                f"rates are only used for the GPU they were measured on ({RESULTS})."]
    distinct, _ = distinct_estimate(size, rates)
    wanted: list[tuple[str, int, str, dict, int]] = [("extract", size.images, "images", {"model": plan.model, "dtype": plan.dtype}, 1),
              ("caption", size.captions, "captions", {"model": plan.model, "precision": plan.precision}, 1),
              ("categorize", distinct or size.captions, "answers", {"model": plan.llm_model, "gpus": plan.llm_gpus},
               plan.llm_gpus)]
    rows, missing = [], []
    for step, work, unit, setting, gpus in wanted:
        entry = rates.rate(step, plan.gpu, **setting)
        if entry is None:
            missing.append(f"{step} ({', '.join(f'{k} {v}' for k, v in setting.items())})")
            continue
        per_task = float(entry["rate"])      # units/s of one task (1 GPU, or the categorize task's GPUs)
        seconds = work / per_task
        at_once = plan.partitions if step == "categorize" else min(len(plan.shards), plan.fan_out)
        bound = "at most " if step == "categorize" and distinct is None else ""
        rows.append(f"| {step} | {_rate(per_task)} {unit}/s per task ({entry['source']}) | "
                    f"{bound}{seconds * gpus / 3600:,.1f} | {bound}{_hours(seconds / at_once)} with {at_once} at once |")
    lines = [f"| step | rate measured on {plan.gpu} | GPU-hours | time |", "| --- | --- | --- | --- |"] + rows
    if missing:
        lines = (lines + [""] if rows else []) + [
            f"No rate is measured on {plan.gpu} for: {'; '.join(missing)}. No time is given for "
            f"{'it' if len(missing) == 1 else 'them'} ({RESULTS}; measured rates in "
            f"components/preflight/{os.path.basename(RATES_FILE)})."]
    return lines


def run_size_markdown(size: RunSize, rates: MeasuredRates) -> str:
    lines = ["# What this run will make", ""] + _sizes(size, rates)
    lines += ["", "## GPU tasks it will start", ""] + _gpu_tasks(size)
    lines += ["", "## Time", ""] + _time(size, rates)
    return "\n".join(lines) + "\n"


def run_size_page(shard_uris: list[str], storage_prefix: str, model: str, pretrained: str, layers: str, dtype: str,
                  precision: str, llm_model: str, llm_gpus: str, partitions: int, fan_out: int,
                  node_selector: dict | None, rates_path: str = RATES_FILE) -> str:
    """The page for a run whose parameters preflight checked (``check_run``: hub models pinned under
    ``storage_prefix``, layers and GPU count valid)."""
    from ..common.model_families import model_n_layers
    from ..common.model_families.hub_revision import read_resolved_models
    from ..common.model_families.layer_selection import parse_layers
    from ..common.precision import parse_dtype
    from .run_size import RunPlan, gpu_product, measure_run

    pins = read_resolved_models(storage_prefix)
    n_layers = model_n_layers(model, pretrained or None, pins=pins)
    plan = RunPlan(shards=shard_uris, model=model, n_layers=n_layers, layers=parse_layers(layers, n_layers),
                   dtype=parse_dtype(dtype, what="extract_dtype"), precision=parse_dtype(precision, what="caption_precision"),
                   llm_model=llm_model, llm_gpus=int(llm_gpus), partitions=int(partitions), fan_out=int(fan_out),
                   gpu=gpu_product(node_selector), pretrained=pretrained, pins=pins)
    return run_size_markdown(measure_run(plan), MeasuredRates.load(rates_path))
