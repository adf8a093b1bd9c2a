"""The pipeline, as DESIGN.md draws it:

    list_shards (CPU) -> ParallelFor(shard) [ extract (1 GPU) -> caption (1 GPU) ]
        -> Collected -> split into partitions (CPU) -> ParallelFor(partition) [ categorize (N GPUs) ]
        -> Collected -> merge labels (CPU) -> report (CPU)

``build_pipeline(image, parallelism)`` returns the ``@dsl.pipeline`` function; the
image and the fan-out width are fixed at compile time, everything else is a run
parameter with a default (the Kubeflow UI shows the docstring's Args as help).
Parameters carry their step's prefix so the UI's alphabetical list groups them.
"""

from dataclasses import dataclass
from typing import Any, Callable, Optional

from kfp import dsl, kubernetes
from kfp.dsl.pipeline_channel import PipelineChannel

from ..components.caption.component import make_caption_op
from ..components.categorize.component import make_categorize_op, make_merge_op, make_partition_op
from ..components.common.devices import REQUIRE_GPU_ENV
from ..components.extract.component import make_extract_op
from ..components.preflight.component import make_list_shards_op
from ..components.report.component import make_report_op
from .container_image import component_image

PIPELINE_NAME = "latent-verbalizer"
S3_SECRET = "lverb-s3-credentials"
S3_SECRET_KEYS = {k: k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")}
HF_SECRET = "lverb-hf-token"
WEIGHTS_PVC = "lverb-model-weights"
WEIGHTS_MOUNT = "/models"
DEFAULT_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
SHM_SIZE = "16Gi"
MOUNTS_ENV = "LVERB_POD_MOUNTS"  # what preflight checks local paths against (components/preflight)


def _declare_in_enclosing_dag(task, *values):
    """Make the compiler declare run parameters that only a task's pod spec uses in the DAG around it.

    kfp 2.17's compiler copies a parameter used only in ``set_accelerator_type``/``set_*_limit``
    into the task's inputs when it writes the task, after it has worked out what an enclosing
    ParallelFor declares: the loop never declares it, and KFP's driver fails the task ("parent
    DAG does not have input parameter"). Registered as one of the task's channel inputs, the
    parameter is declared like any argument. ``yaml_lint.driver_input_faults`` checks the result.
    """
    for value in values:
        # by identity: a channel's == builds a dsl.Condition operation, which is always truthy
        if isinstance(value, PipelineChannel) and not any(value is c for c in task.channel_inputs):
            task.channel_inputs.append(value)
    return task


def _resources(task, cpu: str, cpu_limit: str, memory):
    """CPU request and limit, memory request = limit (a namespace quota on limits needs both;
    equal memory keeps the pod from being evicted for memory it was promised)."""
    task.set_cpu_request(cpu).set_cpu_limit(cpu_limit).set_memory_request(memory).set_memory_limit(memory)
    return _declare_in_enclosing_dag(task, memory)


def _with_weights_volume(task):
    """The weights volume at /models, where ``/models/...`` paths of every parameter live (models,
    checkpoints, shards, storage): every step that may read such a path mounts it."""
    kubernetes.mount_pvc(task, pvc_name=WEIGHTS_PVC, mount_path=WEIGHTS_MOUNT)
    task.set_env_variable(MOUNTS_ENV, WEIGHTS_MOUNT)
    return task


def _with_storage_secrets(task, hf: bool = False):
    """S3 credentials (and the HF token) from Kubernetes secrets as environment, never as parameters."""
    kubernetes.use_secret_as_env(task, secret_name=S3_SECRET, secret_key_to_env=S3_SECRET_KEYS, optional=True)
    if hf:
        kubernetes.use_secret_as_env(task, secret_name=HF_SECRET, secret_key_to_env={"HF_TOKEN": "HF_TOKEN"}, optional=True)
    return task


def _on_gpus(task, count, accelerator_type, node_selector, tolerations, cpu: str, cpu_limit: str, memory,
             shm: str = SHM_SIZE):
    """GPU limits, scheduling, /dev/shm, the weights volume, retries: what every GPU step needs.

    ``count`` and ``accelerator_type`` are a constant string or a STRING pipeline parameter:
    KFP's driver reads the pod-spec fields it resolves at run time with GetStringValue(), so a
    number-typed parameter there becomes "" and the GPU limit is silently dropped
    (tests/test_compile.py lints the compiled YAML for it). Preflight checks the count.
    """
    task.set_accelerator_type(accelerator_type).set_accelerator_limit(count)
    _declare_in_enclosing_dag(task, accelerator_type, count)
    _resources(task, cpu, cpu_limit, memory)
    kubernetes.add_toleration_json(task, tolerations)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=shm)
    _with_weights_volume(task)
    task.set_env_variable("HF_HOME", f"{WEIGHTS_MOUNT}/hf-cache")
    task.set_env_variable(REQUIRE_GPU_ENV, "1")  # a GPU step that sees no GPU fails at once, never falls back to CPU
    task.set_env_variable("LVERB_MODEL_CACHE", f"{WEIGHTS_MOUNT}/lverb-cache")  # CoCa checkpoints and LLM folders from s3://
    task.set_retry(num_retries=2, backoff_duration="60s", backoff_factor=2.0, backoff_max_duration="600s")
    return _with_storage_secrets(task, hf=True)


@dataclass(frozen=True)
class _Steps:
    """The pipeline's components, made for one container image."""

    list_shards: Callable
    extract: Callable
    caption: Callable
    partition: Callable
    categorize: Callable
    merge: Callable
    report: Callable


def _steps(image: str) -> _Steps:
    return _Steps(make_list_shards_op(image), make_extract_op(image), make_caption_op(image), make_partition_op(image),
                  make_categorize_op(image), make_merge_op(image), make_report_op(image))


@dataclass
class _Pods:
    """The Kubernetes settings of the steps' pods; none (``enabled=False``) for kfp.local runs,
    which have no cluster to apply them to."""

    accelerator_type: Any
    node_selector: Any
    tolerations: Any
    enabled: bool = True

    def on_gpus(self, task, count, memory, cpu: str = "8", cpu_limit: str = "16", shm: str = SHM_SIZE):
        if self.enabled:
            _on_gpus(task, count, self.accelerator_type, self.node_selector, self.tolerations, cpu=cpu,
                     cpu_limit=cpu_limit, memory=memory, shm=shm)
        return task

    def on_cpu(self, task, cpu: str, cpu_limit: str, memory: str, hf: bool = False):
        """A CPU step: storage secrets (``hf``: the HF token too), requests and limits, the weights volume."""
        if self.enabled:
            _with_weights_volume(_resources(_with_storage_secrets(task, hf=hf), cpu, cpu_limit, memory))
        return task


def _named(task, name: str):
    """The task's name in the UI, and KFP's cache off: its key covers parameters, not the bulk data the
    steps' small manifests point at (a cached step could point at deleted or overwritten data). Reuse
    comes from the manifests instead: a step whose committed manifest exists with the same parameters
    and input fingerprint skips its work (README: runs, storage and caching)."""
    return task.set_display_name(name).set_caching_options(False)


def _extract_and_caption(steps: _Steps, pods: _Pods, where: dict, shard_list, parallelism: int, *, model, pretrained,
                         layers, dtype, extract_batch_size, extract_memory, precision, caption_batch_size, seq_len,
                         min_seq_len, caption_memory, fail_on_bad_shard, grounding):
    """ParallelFor(shard, parallelism) [ extract (1 GPU) -> caption (1 GPU) ]; the caption task (for Collected)."""
    with dsl.ParallelFor(shard_list, parallelism=parallelism) as shard:
        extracted = _named(steps.extract(shard=shard, **where, model=model, pretrained=pretrained, layers=layers,
                                         dtype=dtype, batch_size=extract_batch_size,
                                         fail_on_bad_shard=fail_on_bad_shard), "extract")
        captioned = _named(steps.caption(features=extracted.outputs["features"], **where, layers=layers,
                                         precision=precision, batch_size=caption_batch_size, seq_len=seq_len,
                                         min_seq_len=min_seq_len, pretrained=pretrained, grounding=grounding,
                                         fail_on_bad_shard=fail_on_bad_shard), "caption")
        pods.on_gpus(extracted, "1", extract_memory)
        pods.on_gpus(captioned, "1", caption_memory)
    return captioned


def _label(steps: _Steps, pods: _Pods, where: dict, captioned, *, partitions, model, gpus, batch_size,
           max_answer_parts, memory):
    """partition (CPU) -> ParallelFor(partition) [ categorize (N GPUs) ] -> merge (CPU); the merge task.

    The partition step collects the caption pointers into one artifact: KFP cannot hand a
    ``dsl.Collected`` of one ParallelFor to the tasks of another. Every partition runs at once,
    each on a node of its own."""
    split = _named(steps.partition(captions=dsl.Collected(captioned.outputs["captions"]), partitions=partitions),
                   "split captions into partitions")
    pods.on_cpu(split, "500m", "1", "2Gi")
    with dsl.ParallelFor(split.outputs["Output"]) as partition:
        labelled = _named(steps.categorize(captions=split.outputs["collected"], partition=partition, **where,
                                           model=model, gpus=gpus, batch_size=batch_size,
                                           max_answer_parts=max_answer_parts), "categorize")
        pods.on_gpus(labelled, gpus, memory, cpu="16", cpu_limit="32", shm="64Gi")
    merged = _named(steps.merge(captions=split.outputs["collected"], partitions=dsl.Collected(labelled.outputs["labels"]),
                                **where), "merge labels")
    return pods.on_cpu(merged, "2", "4", "16Gi")


def build_pipeline(image: Optional[str] = None, parallelism: int = 4, kubernetes_settings: bool = True):
    """The pipeline function for an image and a fan-out width (shards extracted and captioned at once).

    ``kubernetes_settings=False`` leaves out the Kubernetes-only settings (GPUs,
    secrets, volumes) for ``kfp.local`` runs, which have no cluster to apply them to.
    """
    steps = _steps(image or component_image())

    @dsl.pipeline(name=PIPELINE_NAME, description="What each layer of a vision encoder (CoCa, BLIP, ViT-GPT2, LLaVA) sees, in words: a caption "
                  "per image per layer, labelled by an LLM, shown per layer.")
    def latent_verbalizer(
        shards: str = "s3://datasets/coco-karpathy-test/test-{000000..000004}.tar",
        storage_root: str = "s3://latent-verbalizer/runs",
        storage_prefix: str = "",
        extract_model: str = "coca_ViT-L-14",
        extract_pretrained: str = "",
        extract_layers: str = "all",
        extract_dtype: str = "float16",
        extract_batch_size: str = "auto",
        extract_memory: str = "12Gi",
        caption_precision: str = "float32",
        caption_batch_size: str = "auto",
        caption_seq_len: int = 30,
        caption_min_seq_len: int = 5,
        caption_memory: str = "16Gi",
        caption_grounding: bool = False,
        categorize_model: str = "meta-llama/Llama-3.1-70B-Instruct",
        categorize_gpus: str = "8",
        categorize_batch_size: str = "auto",
        categorize_max_answer_parts: int = 0,
        categorize_memory: str = "200Gi",
        categorize_partitions: int = 1,
        report_compare_prefix: str = "",
        fail_on_bad_shard: bool = False,
        gpu_accelerator_type: str = "nvidia.com/gpu",
        gpu_node_selector: dict = {},
        gpu_tolerations: list = DEFAULT_TOLERATIONS,
    ):
        """latent-verbalizer.

        Args:
            shards: webdataset shard pattern (s3://, minio:// or a mounted path), braces and globs allowed.
            storage_root: where each run's bulk data goes by default: <storage_root>/<run id> (features, captions, labels, report files).
            storage_prefix: empty (default): a prefix of this run's own under storage_root. Give one (s3://bucket/prefix) to share bulk data between runs: a run then skips the shards and captions already finished there.
            extract_model: the model whose layers are captioned: an open_clip CoCa architecture (coca_ViT-L-14 as in the study; coca_ViT-B-32; tiny-random-coca offline), or a Hugging Face captioner (BLIP, VisionEncoderDecoder such as ViT + GPT-2, LLaVA) as hf:ORG/NAME, a /models/... folder on the weights volume, or an s3:// prefix holding the model folder.
            extract_pretrained: empty: the study's weights (mscoco_finetuned_laion2B-s13B-b90k) for CoCa, the model itself for Hugging Face models. CoCa: an open_clip tag, /models/... checkpoint or s3:// object; Hugging Face: a /models/... folder or s3:// prefix holding the same model (air-gapped clusters); or 'random'.
            extract_layers: 'all' or 0-based block indices, e.g. 0,5,23.
            extract_dtype: stored feature dtype: float16 (default), bfloat16 or float32 (fp16, bf16, fp32 accepted).
            extract_batch_size: images per batch, or 'auto' (from free GPU memory).
            extract_memory: host memory of each extract pod, its Kubernetes request and limit (default 12Gi: extract loads only the vision tower, about 1.3 GiB for any family, plus up to 3 GiB of pinned copy buffers).
            caption_precision: float32 (default: the study's method, token-for-token its greedy loop) or bfloat16 (faster, opt-in; captions differ, and the report marks the deviation). fp32, bf16 accepted.
            caption_batch_size: (image, layer) pairs decoded together, or 'auto'.
            caption_seq_len: most tokens per caption, including the start token (study: 30).
            caption_min_seq_len: end-of-text banned while shorter than this (study: 5).
            caption_memory: host memory of each caption pod, its Kubernetes request and limit (default 16Gi fits CoCa ViT-L/14, BLIP and ViT-GPT2; LLaVA-1.5-7B needs about 48Gi: its whole model is loaded on the host in float32 once).
            caption_grounding: False (default). True: the caption step also writes each caption's grounding map, where in the image the caption looks (gradient x input after the decoder hand-off's first normalisation, one weight per patch, summing to 1), as the captions table's grounding column; the report draws it over the thumbnails. About 2x the caption step's time on the CPU (benchmarks/RESULTS.md).
            categorize_model: the labelling LLM: Hugging Face id, /models/... folder, s3:// prefix, or smollm2-135m.
            categorize_gpus: GPUs for the labelling step, a whole number >= 1, e.g. 8 (sharded or replicated as the model's size requires).
            categorize_batch_size: captions per generation batch, or 'auto'.
            categorize_max_answer_parts: 0 (the study's method): each caption alone bounds its answer; N: at most N parts per answer (cheaper; recorded in the labels' metadata).
            categorize_memory: host memory of the labelling pod, its Kubernetes request and limit (e.g. 200Gi for a 70B model over 8 GPUs).
            categorize_partitions: how many labelling tasks share the distinct captions, each on a node of its own with categorize_gpus GPUs (default 1). Captions are split by a hash of their text, so identical captions are labelled once, and the result is the same for any number. Labelling time falls about in proportion; give about one per node you can spare, and keep the number when you re-run on a shared storage_prefix (answers are kept per partition).
            report_compare_prefix: empty (default), or the storage prefix of a finished run to compare this one with (s3://bucket/runs/<run id>): the report then also shows both runs' category shares on relative depth, their difference, entropy, and both captions of the images both share.
            fail_on_bad_shard: False (default): a shard that is bad for a reason a retry cannot change (not a tar, no usable image, features of other parameters in its folder, a checksum mismatch) is left out and the run goes on; the report lists it with its reason at the top, and its failed_shards metric counts it. True: such a shard fails the run.
            gpu_accelerator_type: Kubernetes GPU resource name, e.g. nvidia.com/gpu.
            gpu_node_selector: node labels for GPU steps, e.g. {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}.
            gpu_tolerations: tolerations of the GPU steps (JSON list of Kubernetes tolerations).
        """
        # Where bulk data goes: storage_prefix when given, else <storage_root>/<run id>. Every step
        # works it out from the same three values (a task output fed into the ParallelFor would be
        # one pod fewer, but kfp.local 2.17 hands the loop's steps the loop item in its place).
        where = dict(storage_prefix=storage_prefix, storage_root=storage_root, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        pods = _Pods(gpu_accelerator_type, gpu_node_selector, gpu_tolerations, enabled=kubernetes_settings)
        listed = _named(steps.list_shards(shards=shards, model=extract_model, pretrained=extract_pretrained,
                                          layers=extract_layers, llm_model=categorize_model, llm_gpus=categorize_gpus,
                                          compare_prefix=report_compare_prefix, extract_memory=extract_memory,
                                          caption_memory=caption_memory, categorize_memory=categorize_memory,
                                          dtype=extract_dtype, precision=caption_precision,
                                          partitions=categorize_partitions, fan_out=parallelism,
                                          gpu_node_selector=gpu_node_selector, **where),
                        "check parameters, list shards")
        pods.on_cpu(listed, "500m", "1", "2Gi", hf=True)  # HF token: hub configs
        captioned = _extract_and_caption(
            steps, pods, where, listed.outputs["Output"], parallelism, model=extract_model, pretrained=extract_pretrained,
            layers=extract_layers, dtype=extract_dtype, extract_batch_size=extract_batch_size,
            extract_memory=extract_memory, precision=caption_precision, caption_batch_size=caption_batch_size,
            seq_len=caption_seq_len, min_seq_len=caption_min_seq_len, caption_memory=caption_memory,
            fail_on_bad_shard=fail_on_bad_shard, grounding=caption_grounding)
        merged = _label(steps, pods, where, captioned, partitions=categorize_partitions, model=categorize_model,
                        gpus=categorize_gpus, batch_size=categorize_batch_size,
                        max_answer_parts=categorize_max_answer_parts, memory=categorize_memory)
        reported = _named(steps.report(captions=dsl.Collected(captioned.outputs["captions"]),
                                       labels=merged.outputs["labels"], shards=shards,
                                       compare_prefix=report_compare_prefix, **where), "report")
        pods.on_cpu(reported, "2", "4", "16Gi")

    return latent_verbalizer
