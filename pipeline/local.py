"""``lverb run --local``: the whole pipeline on this machine with ``kfp.local``.

Every step runs as a subprocess of this Python (``SubprocessRunner(use_venv=False)``),
through the same component code Kubeflow runs; artifacts go under a local pipeline
root, bulk data on local disk or an S3 prefix. Defaults are the offline models, so it
runs with no network: ``tiny-random-coca`` CoCa (random weights: gibberish captions, real
mechanics) and SmolLM2-135M-Instruct for the labels, on the sample photos this package
ships (``sample_images/``).

The terminal shows a line per step (``run_console``); everything kfp.local and the steps
print goes to ``<workdir>/run.log``.
"""

import builtins
import contextlib
import datetime as dt
import logging
import os
from importlib import resources
from typing import Optional

from ..components.common import storage
from ..components.extract.shards import write_shards
from .params import match_parameter_types
from .run_console import open_console

log = logging.getLogger(__name__)

LOCAL_DEFAULTS = {
    "extract_model": "tiny-random-coca",
    "extract_pretrained": "",  # the model's own: random for the tiny-random models, the real weights for real ones
    "extract_batch_size": "16",
    "caption_precision": "float32",
    "categorize_model": "smollm2-135m",
    "categorize_gpus": "1",
    # The demo's answers hold at most 5 parts (as many as the few-shot examples show): SmolLM2 on 2 CPU
    # cores writes ~3x fewer tokens per gibberish caption. A recorded deviation (labels' metadata),
    # for the demo only; the pipeline's default is the study's method (0: no cap).
    "categorize_max_answer_parts": 5,
}


def make_sample_shards(out_uri: str, per_shard: int = 4) -> str:
    """Webdataset shards of the sample photos this package ships (offline data); returns their pattern."""
    with resources.as_file(resources.files(__package__) / "sample_images") as folder:
        uris = write_shards(str(folder), out_uri, per_shard=per_shard, prefix="sample")
    return storage.join(out_uri, f"sample-{{000000..{len(uris) - 1:06d}}}.tar")


def run_local(params: Optional[dict] = None, workdir: Optional[str] = None, storage_prefix: Optional[str] = None,
              parallelism: int = 2, cache: bool = True, verbose: bool = False) -> dict:
    """Run the pipeline locally; returns where things are (report, data, pipeline root, log).

    ``verbose``: show everything the steps print, live, besides writing it to ``run.log``.
    """
    from kfp import local

    from latent_verbalizer.pipeline.pipeline import build_pipeline

    workdir = os.path.abspath(workdir or os.path.join("runs", dt.datetime.now().strftime("%Y%m%d-%H%M%S")))
    os.makedirs(workdir, exist_ok=True)
    run_params = dict(LOCAL_DEFAULTS)
    run_params.update(params or {})
    prefix = storage_prefix or os.path.join(workdir, "data")
    run_params["storage_prefix"] = prefix
    log_path = os.path.join(workdir, "run.log")
    console, log_file = open_console(log_path, verbose)
    ours = logging.getLogger("latent_verbalizer")
    to_log_file = logging.StreamHandler(console)  # this process's own log lines go where the steps' go
    to_log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    started = dt.datetime.now()
    # kfp.local indents every print() of a task by swapping builtins.print for the task's duration; with a
    # ParallelFor's tasks in threads the swaps overlap and restore out of order, leaving print() indented for
    # the rest of the process (our closing lines, and any later caller's output). Ours is put back below.
    original_print = builtins.print
    try:
        with log_file, contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
            ours.addHandler(to_log_file)
            ours.propagate = False
            if "shards" not in run_params:
                shard_dir = storage.join(prefix, "shards") if storage.is_s3(prefix) else os.path.join(workdir, "shards")
                run_params["shards"] = make_sample_shards(shard_dir)
            console.say(f"running the pipeline locally: {', '.join(f'{k}={v}' for k, v in sorted(run_params.items()))}\n"
                        f"full logs: {log_path}{'' if verbose else ' (lverb -v run --local shows them live)'}")
            local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=os.path.join(workdir, "kfp"),
                       enable_caching=cache, cache_root=os.path.join(workdir, "kfp-cache"))
            pipeline_func = build_pipeline(parallelism=parallelism, kubernetes_settings=False)
            run_params = match_parameter_types(run_params, pipeline_func)
            log.info("running the pipeline locally with %s", run_params)
            try:
                pipeline_func(**run_params)
            except BaseException:
                if not verbose:
                    console.report_unfinished()
                raise
    finally:
        builtins.print = original_print
        ours.removeHandler(to_log_file)
        ours.propagate = True
        print(f"{console.steps_done} steps in {(dt.datetime.now() - started).total_seconds():.0f}s", flush=True)
    report = storage.join(prefix, "report", "report.html")
    return {"report": report, "storage_prefix": prefix, "pipeline_root": os.path.join(workdir, "kfp"),
            "params": run_params, "log": log_path}


def run_local_compared(params: Optional[dict], compare_model: str, workdir: Optional[str] = None,
                       storage_prefix: Optional[str] = None, **kwargs) -> dict:
    """Two local runs on the same images, the second with ``compare_model``, whose report also
    compares it with the first (the report step's ``report_compare_prefix``); returns the second
    run's places, with the first's under ``"first"``."""
    workdir = os.path.abspath(workdir or os.path.join("runs", dt.datetime.now().strftime("%Y%m%d-%H%M%S")))
    first = run_local(params, workdir=os.path.join(workdir, "first"),
                      storage_prefix=storage_prefix and storage.join(storage_prefix, "first"), **kwargs)
    second_params = dict(params or {}, shards=first["params"]["shards"], extract_model=compare_model,
                         report_compare_prefix=first["storage_prefix"])
    second = run_local(second_params, workdir=os.path.join(workdir, "second"),
                       storage_prefix=storage_prefix and storage.join(storage_prefix, "second"), **kwargs)
    return dict(second, first=first)
