"""KFP wrappers of the labelling: split the captions in partitions, label each partition, merge.

``partition_captions`` (CPU) collects the caption step's pointers into one file and names the
partitions; ``categorize_captions`` (GPUs) labels one partition, inside a ParallelFor over them;
``merge_label_partitions`` (CPU) writes the one labels table and aggregate the report reads.
"""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Output


def partition_captions(captions: Input[List[Dataset]], partitions: int, collected: Output[Dataset]) -> list:
    """Collect the caption step's manifests into one file and name the labelling's partitions.

    Args:
        captions: the caption step's manifests, one per shard.
        partitions: how many categorize tasks label the distinct captions (split by a hash of the caption text).
        collected: the manifests' captions URIs and failed shards, in one JSON file (read by each partition's task).
    """
    from latent_verbalizer.components.categorize.partitions.split import all_partitions, write_collected_captions
    from latent_verbalizer.components.common.contracts import parse_partition_count, read_caption_pointers

    count = parse_partition_count(partitions)
    uris, failed = read_caption_pointers([artifact.path for artifact in captions])
    if not uris:
        raise ValueError("every shard failed, nothing to label: "
                         + "; ".join(f"{b.shard} ({b.step}): {b.reason}" for b in failed))
    write_collected_captions(collected.path, uris, failed)
    collected.metadata.update({"shards": len(uris), "failed_shards": len(failed), "partitions": count})
    return [p.name for p in all_partitions(count)]


def categorize_captions(
    captions: Input[Dataset],
    partition: str,
    storage_prefix: str,
    model: str,
    gpus: str,
    batch_size: str,
    labels: Output[Dataset],
    max_answer_parts: int = 0,
    storage_root: str = "",
    run_id: str = "",
):
    """Label what every distinct caption of one partition talks about with an instruct LLM (grammar-constrained).

    Args:
        captions: the caption step's manifests, collected by partition_captions (shards recorded as failed are left out).
        partition: which partition of the distinct captions to label, e.g. partition-001-of-003 (a caption's partition comes from a hash of its text).
        storage_prefix: where bulk data goes; this partition's labels land under <prefix>/labels/<partition>/.
        storage_root: with an empty storage_prefix, bulk data goes under <storage_root>/<run_id>.
        run_id: the pipeline run's id (dsl.PIPELINE_JOB_ID_PLACEHOLDER): each run's own prefix.
        model: LLM: Hugging Face id (e.g. meta-llama/Llama-3.1-70B-Instruct), local/PVC folder, s3:// prefix, smollm2-135m or tiny-random-llama.
        gpus: GPUs this step gets, as digits (a string: KFP's driver sets the pod's GPU limit only from a string); the model is sharded over them or replicated, whichever fits.
        batch_size: captions per generation batch, or 'auto'.
        labels: small JSON manifest pointing at the partition's labels.parquet (merge_label_partitions reads it).
        max_answer_parts: 0 (the study's method): each caption alone bounds its answer; N: at most N parts per
            answer (cheaper, e.g. the local demo; recorded in the labels' metadata).
    """
    import json

    from latent_verbalizer.components.categorize.categorize import run_categorize
    from latent_verbalizer.components.categorize.partitions.split import Partition, read_collected_captions
    from latent_verbalizer.components.common import storage
    from latent_verbalizer.components.common.devices import usable_gpus
    from latent_verbalizer.components.common.logs import configure_logging
    from latent_verbalizer.components.common.storage.run_prefix import run_storage_prefix

    configure_logging()
    storage_prefix = run_storage_prefix(storage_prefix, storage_root, run_id)
    uris, _ = read_collected_captions(captions.path)
    part = Partition.parse(partition)
    out = part.folder(storage.join(storage_prefix, "labels"))
    # On Kubeflow the pod sees the GPUs it was given (the pipeline sets LVERB_REQUIRE_GPU: seeing fewer
    # is an error); a kfp.local run on a laptop may see none, and then runs on the CPU (gpus=0).
    summary = run_categorize(uris, out, model=model, gpus=usable_gpus(int(gpus)), batch_size=batch_size,
                             max_parts=int(max_answer_parts) or None, run_id=run_id, partition=part)
    result = {"labels": storage.join(out, "labels.parquet"), "partition": part.name, "summary": summary}
    with open(labels.path, "w") as f:
        json.dump(result, f, default=str)
    labels.metadata.update({"labels": result["labels"], "partition": part.name,
                            "unique_captions": summary.get("unique_captions", 0)})


def merge_label_partitions(
    captions: Input[Dataset],
    partitions: Input[List[Dataset]],
    storage_prefix: str,
    labels: Output[Dataset],
    storage_root: str = "",
    run_id: str = "",
):
    """Merge the partitions' labels into the one labels table and the per-layer aggregate (CPU).

    Args:
        captions: the caption step's manifests, collected by partition_captions.
        partitions: the manifests of every partition's categorize task.
        storage_prefix: where bulk data goes; the merged tables land under <prefix>/labels/.
        storage_root: with an empty storage_prefix, bulk data goes under <storage_root>/<run_id>.
        run_id: the pipeline run's id (dsl.PIPELINE_JOB_ID_PLACEHOLDER): each run's own prefix.
        labels: small JSON manifest pointing at labels.parquet and aggregate.parquet (the report reads it).
    """
    import json

    from latent_verbalizer.components.categorize.partitions.merge import merge_partitions
    from latent_verbalizer.components.categorize.partitions.split import Partition, read_collected_captions
    from latent_verbalizer.components.common import storage
    from latent_verbalizer.components.common.logs import configure_logging
    from latent_verbalizer.components.common.storage.run_prefix import run_storage_prefix

    configure_logging()
    storage_prefix = run_storage_prefix(storage_prefix, storage_root, run_id)
    uris, _ = read_collected_captions(captions.path)
    given = []
    for artifact in partitions:
        with open(artifact.path) as f:
            given.append(Partition.parse(json.load(f)["partition"]))
    given.sort(key=lambda p: (p.count, p.index))
    count = given[0].count if given else 0
    if [(p.index, p.count) for p in given] != [(i, count) for i in range(count)]:
        raise ValueError(f"the partitions' manifests name {[p.name for p in given]}: expected every partition of "
                         f"one count, once each")
    out = storage.join(storage_prefix, "labels")
    summary = merge_partitions(uris, out, count, run_id=run_id)
    result = {"labels": storage.join(out, "labels.parquet"), "aggregate": storage.join(out, "aggregate.parquet"),
              "captions": uris, "summary": summary}
    with open(labels.path, "w") as f:
        json.dump(result, f, default=str)
    labels.metadata.update({"labels": result["labels"], "aggregate": result["aggregate"],
                            "unique_captions": summary.get("unique_captions", 0), "partitions": count})


def make_partition_op(image: str):
    return dsl.component(partition_captions, base_image=image, install_kfp_package=False)


def make_categorize_op(image: str):
    return dsl.component(categorize_captions, base_image=image, install_kfp_package=False)


def make_merge_op(image: str):
    return dsl.component(merge_label_partitions, base_image=image, install_kfp_package=False)
