"""``lverb run --local``: the whole pipeline on this machine with ``kfp.local``.

Every step runs as a subprocess of this Python (``SubprocessRunner(use_venv=False)``),
through the same component code Kubeflow runs; artifacts go under a local pipeline
root, bulk data on local disk or an S3 prefix. Defaults are the offline models, so it
runs with no network: ``tiny-random`` CoCa (random weights: gibberish captions, real
mechanics) and SmolLM2-135M-Instruct for the labels.
"""

import datetime as dt
import logging
import os
from typing import Optional

from ..components.common import storage

log = logging.getLogger(__name__)

LOCAL_DEFAULTS = {
    "extract_model": "tiny-random",
    "extract_pretrained": "random",
    "extract_batch_size": "16",
    "caption_precision": "auto",
    "categorize_model": "smollm2-135m",
    "categorize_gpus": 1,
    # The demo's answers hold at most 5 parts (as many as the few-shot examples show): SmolLM2 on 2 CPU
    # cores writes ~3x fewer tokens per gibberish caption. A recorded deviation (labels' metadata),
    # for the demo only; the pipeline's default is the study's method (0: no cap).
    "categorize_max_answer_parts": 5,
}


def make_sample_shards(out_uri: str, per_shard: int = 4) -> str:
    """Webdataset shards of the photos scikit-image ships (offline sample data); returns their pattern."""
    import skimage.data

    from latent_verbalizer.components.extract.shards import write_shards

    root = os.path.dirname(skimage.data.__file__)
    photos = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
              "hubble_deep_field.jpg", "horse.png", "brick.png"]
    folder = os.path.join(os.path.expanduser("~/.cache/latent-verbalizer"), "sample-photos")
    os.makedirs(folder, exist_ok=True)
    for name in photos:
        target = os.path.join(folder, name)
        if not os.path.exists(target) and os.path.exists(os.path.join(root, name)):
            os.symlink(os.path.join(root, name), target)
    uris = write_shards(folder, out_uri, per_shard=per_shard, prefix="sample")
    return storage.join(out_uri, f"sample-{{000000..{len(uris) - 1:06d}}}.tar")


def run_local(params: Optional[dict] = None, workdir: Optional[str] = None, storage_prefix: Optional[str] = None,
              parallelism: int = 2, cache: bool = True) -> dict:
    """Run the pipeline locally; returns where things are (report, data, pipeline root)."""
    from kfp import local

    from latent_verbalizer.pipeline.pipeline import build_pipeline

    workdir = os.path.abspath(workdir or os.path.join("runs", dt.datetime.now().strftime("%Y%m%d-%H%M%S")))
    os.makedirs(workdir, exist_ok=True)
    run_params = dict(LOCAL_DEFAULTS)
    run_params.update(params or {})
    prefix = storage_prefix or os.path.join(workdir, "data")
    run_params["storage_prefix"] = prefix
    if "shards" not in run_params:
        shard_dir = storage.join(prefix, "shards") if storage.is_s3(prefix) else os.path.join(workdir, "shards")
        run_params["shards"] = make_sample_shards(shard_dir)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=os.path.join(workdir, "kfp"),
               enable_caching=cache, cache_root=os.path.join(workdir, "kfp-cache"))
    pipeline_func = build_pipeline(parallelism=parallelism, kubernetes_settings=False)
    log.info("running the pipeline locally with %s", run_params)
    pipeline_func(**run_params)
    report = storage.join(prefix, "report", "report.html")
    return {"report": report, "storage_prefix": prefix, "pipeline_root": os.path.join(workdir, "kfp"), "params": run_params}
