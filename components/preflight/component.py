"""KFP wrappers of the preflight steps (CPU only): choose the run's storage prefix, then check
the run's parameters and list its shards."""

from kfp import dsl


def choose_storage_prefix(storage_prefix: str, storage_root: str, run_id: str) -> str:
    """Where this run's bulk data goes: storage_prefix when given, else <storage_root>/<run id>.

    Args:
        storage_prefix: a prefix to share between runs (s3://bucket/prefix); empty: one of this run's own.
        storage_root: where runs without an explicit storage_prefix get a prefix of their own.
        run_id: the pipeline run's id (dsl.PIPELINE_JOB_ID_PLACEHOLDER).
    """
    from latent_verbalizer.components.preflight.preflight import run_storage_prefix

    prefix = run_storage_prefix(storage_prefix, storage_root, run_id)
    print(f"bulk data of this run: {prefix}")
    return prefix


def list_shards(shards: str, storage_prefix: str, model: str, layers: str, llm_model: str, llm_gpus: str) -> list:
    """Check the run's parameters and list the shards to process (CPU only).

    Args:
        shards: shard pattern, e.g. s3://bucket/coco/test-{000000..000004}.tar.
        storage_prefix: where bulk data goes (s3://bucket/prefix).
        model: the CoCa architecture (to check layers against it).
        layers: layers to extract.
        llm_model: the categorize step's LLM.
        llm_gpus: GPUs of the categorize step, as digits (e.g. "8"): the pod's GPU limit comes from this string.
    """
    from latent_verbalizer.components.common.logs import configure_logging
    from latent_verbalizer.components.preflight.preflight import check_run

    configure_logging()
    uris = check_run(shards, storage_prefix, model, layers, llm_model, llm_gpus)
    print(f"{len(uris)} shards: {uris[:3]}{' ...' if len(uris) > 3 else ''}")
    return uris


def make_choose_storage_prefix_op(image: str):
    return dsl.component(choose_storage_prefix, base_image=image, install_kfp_package=False)


def make_list_shards_op(image: str):
    return dsl.component(list_shards, base_image=image, install_kfp_package=False)
