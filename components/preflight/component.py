"""KFP wrapper of the preflight step: check the run's parameters and list its shards (CPU only)."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Markdown, Output


def list_shards(shards: str, storage_prefix: str, model: str, layers: str, llm_model: str, llm_gpus: str,
                run_size: Output[Markdown], storage_root: str = "", run_id: str = "", pretrained: str = "",
                compare_prefix: str = "", extract_memory: str = "12Gi", caption_memory: str = "16Gi",
                categorize_memory: str = "200Gi", dtype: str = "float16", precision: str = "float32",
                partitions: int = 1, fan_out: int = 4, gpu_node_selector: Optional[dict] = None) -> list:
    """Check the run's parameters, list the shards to process and say what the run will make (CPU only).

    Args:
        shards: shard pattern, e.g. s3://bucket/coco/test-{000000..000004}.tar.
        storage_prefix: where bulk data goes (s3://bucket/prefix).
        storage_root: with an empty storage_prefix, bulk data goes under <storage_root>/<run_id>.
        run_id: the pipeline run's id (dsl.PIPELINE_JOB_ID_PLACEHOLDER): each run's own prefix.
        model: the model whose layers are captioned (checked, and its layers counted, from its config); a hub model (hf:ORG/NAME) is pinned here to its current commit for the whole run (<storage prefix>/resolved-models.json).
        pretrained: where the model's files are when not at its name (a Hugging Face model's folder or s3:// prefix).
        layers: layers to extract.
        llm_model: the categorize step's LLM.
        llm_gpus: GPUs of the categorize step, as digits (e.g. "8"): the pod's GPU limit comes from this string.
        compare_prefix: the report's second run, if any (a path there must be on a mounted volume too).
        extract_memory: memory of each extract pod (a Kubernetes quantity, checked here).
        caption_memory: memory of each caption pod.
        categorize_memory: memory of the labelling pod.
        dtype: the stored features' dtype (their size in storage).
        precision: the caption step's precision (which measured rate applies).
        partitions: labelling partitions, one categorize task each (a whole number >= 1).
        fan_out: shards extracted and captioned at once (the compiled --parallelism).
        gpu_node_selector: the GPU steps' node labels; nvidia.com/gpu.product names the GPU whose measured rates give times.
        run_size: Markdown: images, captions, feature bytes, answers to generate, GPU tasks, and time where rates were measured on this GPU.
    """
    from latent_verbalizer.components.common.logs import configure_logging
    from latent_verbalizer.components.common.storage.run_prefix import run_storage_prefix
    from latent_verbalizer.components.preflight.preflight import check_run
    from latent_verbalizer.components.preflight.run_size_page import run_size_page

    configure_logging()
    storage_prefix = run_storage_prefix(storage_prefix, storage_root, run_id)
    uris = check_run(shards, storage_prefix, model, layers, llm_model, llm_gpus, pretrained=pretrained,
                     compare_prefix=compare_prefix, memory={"extract_memory": extract_memory,
                                                            "caption_memory": caption_memory,
                                                            "categorize_memory": categorize_memory},
                     partitions=partitions)
    page = run_size_page(uris, storage_prefix, model, pretrained, layers, dtype, precision, llm_model, llm_gpus,
                         partitions, fan_out, gpu_node_selector)
    with open(run_size.path, "w", encoding="utf-8") as f:
        f.write(page)
    print(f"{len(uris)} shards: {uris[:3]}{' ...' if len(uris) > 3 else ''}; bulk data of this run under {storage_prefix}")
    return uris


def make_list_shards_op(image: str):
    return dsl.component(list_shards, base_image=image, install_kfp_package=False)
