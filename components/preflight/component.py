"""KFP wrapper of the preflight step: check the run's parameters and list its shards (CPU only)."""

from typing import NamedTuple

from kfp import dsl


def list_shards(shards: str, storage_prefix: str, storage_root: str, run_id: str, model: str, layers: str,
                llm_model: str, llm_gpus: str) -> NamedTuple("Preflight", [("shards", list), ("storage_prefix", str)]):
    """Check the run's parameters, choose its storage prefix and list the shards to process (CPU only).

    Args:
        shards: shard pattern, e.g. s3://bucket/coco/test-{000000..000004}.tar.
        storage_prefix: where bulk data goes (s3://bucket/prefix); empty: <storage_root>/<run id>.
        storage_root: where runs without an explicit storage_prefix get a prefix of their own.
        run_id: the pipeline run's id (dsl.PIPELINE_JOB_ID_PLACEHOLDER).
        model: the CoCa architecture (to check layers against it).
        layers: layers to extract.
        llm_model: the categorize step's LLM.
        llm_gpus: GPUs of the categorize step, as digits (e.g. "8"): the pod's GPU limit comes from this string.
    """
    from collections import namedtuple

    from latent_verbalizer.components.common.logs import configure_logging
    from latent_verbalizer.components.preflight.preflight import check_run, run_storage_prefix

    configure_logging()
    prefix = run_storage_prefix(storage_prefix, storage_root, run_id)
    uris = check_run(shards, prefix, model, layers, llm_model, llm_gpus)
    print(f"{len(uris)} shards: {uris[:3]}{' ...' if len(uris) > 3 else ''}; bulk data under {prefix}")
    return namedtuple("Preflight", ["shards", "storage_prefix"])(uris, prefix)


def make_list_shards_op(image: str):
    return dsl.component(list_shards, base_image=image, install_kfp_package=False)
