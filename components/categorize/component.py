"""KFP wrapper of the categorize step."""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Output


def categorize_captions(
    captions: Input[List[Dataset]],
    storage_prefix: str,
    model: str,
    gpus: str,
    batch_size: str,
    labels: Output[Dataset],
    max_answer_parts: int = 0,
    storage_root: str = "",
    run_id: str = "",
):
    """Label what every distinct caption talks about with an instruct LLM (grammar-constrained).

    Args:
        captions: the caption step's manifests, one per shard (shards recorded as failed are left out).
        storage_prefix: where bulk data goes; labels land under <prefix>/labels/.
        storage_root: with an empty storage_prefix, bulk data goes under <storage_root>/<run_id>.
        run_id: the pipeline run's id (dsl.PIPELINE_JOB_ID_PLACEHOLDER): each run's own prefix.
        model: LLM: Hugging Face id (e.g. meta-llama/Llama-3.1-70B-Instruct), local/PVC folder, s3:// prefix, smollm2-135m or tiny-random.
        gpus: GPUs this step gets, as digits (a string: KFP's driver sets the pod's GPU limit only from a string); the model is sharded over them or replicated, whichever fits.
        batch_size: captions per generation batch, or 'auto'.
        labels: small JSON manifest pointing at labels.parquet and aggregate.parquet.
        max_answer_parts: 0 (the study's method): each caption alone bounds its answer; N: at most N parts per
            answer (cheaper, e.g. the local demo; recorded in the labels' metadata).
    """
    import json

    from latent_verbalizer.components.categorize.categorize import run_categorize
    from latent_verbalizer.components.common import storage
    from latent_verbalizer.components.common.contracts import read_caption_pointers, run_storage_prefix
    from latent_verbalizer.components.common.devices import usable_gpus
    from latent_verbalizer.components.common.logs import configure_logging

    configure_logging()
    storage_prefix = run_storage_prefix(storage_prefix, storage_root, run_id)
    uris, failed = read_caption_pointers([artifact.path for artifact in captions])
    if not uris:
        raise ValueError("every shard failed, nothing to label: "
                         + "; ".join(f"{b.shard} ({b.step}): {b.reason}" for b in failed))
    out = storage.join(storage_prefix, "labels")
    # On Kubeflow the pod sees the GPUs it was given (the pipeline sets LVERB_REQUIRE_GPU: seeing fewer
    # is an error); a kfp.local run on a laptop may see none, and then runs on the CPU (gpus=0).
    summary = run_categorize(uris, out, model=model, gpus=usable_gpus(int(gpus)), batch_size=batch_size,
                             max_parts=int(max_answer_parts) or None, run_id=run_id)
    result = {"labels": storage.join(out, "labels.parquet"), "aggregate": storage.join(out, "aggregate.parquet"),
              "captions": uris, "summary": summary}
    with open(labels.path, "w") as f:
        json.dump(result, f, default=str)
    labels.metadata.update({"labels": result["labels"], "aggregate": result["aggregate"],
                            "unique_captions": summary.get("unique_captions", 0)})


def make_categorize_op(image: str):
    return dsl.component(categorize_captions, base_image=image, install_kfp_package=False)
