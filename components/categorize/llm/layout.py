"""Multi-GPU layout: replicas of the model (one per GPU or GPU group, data parallel, one
process each) or one model sharded over a group (``device_map`` with ``max_memory``),
worked out from the model's size and the GPUs given; computable on the meta device.
Without GPUs: one single-threaded replica process per CPU core (``cpu_replica_count``)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from ...common.memory_budget import rows_that_fit

log = logging.getLogger(__name__)

GiB = 1 << 30
OVERHEAD_BYTES = 3 * GiB        # per GPU: CUDA context, allocator slack, temporary buffers
MIN_BATCH = 8                   # a group must hold the weights and the KV cache of this many answers
MAX_BATCH = 256
# On the CPU, one replica process per core, each decoding with one thread (replicas.replica.CPU_DECODE_THREADS):
# small batches are small matrix products, and threads of one process that wait for each other on a
# busy machine made a SmolLM2 step 18x slower (2.40 s at batch 4 with 2 threads, 0.133 s with 1).
# A replica costs a process start and a model load (seconds); a caption, decoding work that grows
# with the weights read per token (SmolLM2-135M, 0.65 GB in float32: about 2 s a caption on one core).
# A replica pays off with at least this much work: 8 SmolLM2 captions (a tiny test model's 50
# captions are well under it: its answers take milliseconds and a second process only costs).
MIN_CPU_REPLICA_WORK_BYTES = 8 * 650_000_000
HOST_MEMORY_SHARE = 0.5         # of the host's available memory, the CPU replicas' weights may take


@dataclass
class Layout:
    mode: str                     # "cpu", "single", "replicas" or "sharded"
    n_gpus: int
    gpus_per_replica: int
    replicas: int
    groups: list[list[int]]       # GPU indices of each replica
    max_memory: list[dict] = field(default_factory=list)   # per replica, for from_pretrained / infer_auto_device_map
    model_bytes: int = 0
    gpu_bytes: int = 0
    kv_budget_bytes: int = 0      # per replica, left for the KV cache and logits
    batch_size: int = 0           # largest batch the budget holds (the `auto` batch size)

    def describe(self) -> str:
        if self.mode == "cpu":
            return (f"layout: CPU, {self.replicas} replica process(es) of one thread each, "
                    f"model {self.model_bytes / 1e9:.2f} GB")
        unused = self.n_gpus - self.replicas * self.gpus_per_replica
        how = ("one model per GPU" if self.gpus_per_replica == 1 else
               f"each replica sharded over {self.gpus_per_replica} GPUs with device_map/max_memory")
        return (f"layout: {self.mode}, {self.replicas} replica(s) x {self.gpus_per_replica} GPU(s) of "
                f"{self.gpu_bytes / 1e9:.0f} GB ({how}); model {self.model_bytes / 1e9:.1f} GB; "
                f"KV budget {self.kv_budget_bytes / 1e9:.1f} GB per replica -> batch up to {self.batch_size}"
                + (f"; {unused} GPU(s) unused" if unused else "") + f"; groups {self.groups}")

    def to_json(self) -> dict:
        return asdict(self)


def cpu_replica_count(n_captions: int, model_bytes: int, cores: int, available_bytes: int | None) -> int:
    """Replica processes on the CPU: one per core, no more than the work keeps busy (each replica
    at least ``MIN_CPU_REPLICA_WORK_BYTES`` of captions x weight bytes) nor than ``HOST_MEMORY_SHARE``
    of the available host memory holds copies of the weights (unknown memory: no bound); at least one."""
    by_memory = cores if available_bytes is None else int(available_bytes * HOST_MEMORY_SHARE // max(model_bytes, 1))
    by_work = n_captions * model_bytes // MIN_CPU_REPLICA_WORK_BYTES
    return max(1, min(cores, by_work, by_memory))


def plan_layout(model_bytes: int, n_gpus: int, gpu_bytes: int, seq_bytes: int,
                overhead_bytes: int = OVERHEAD_BYTES, min_batch: int = MIN_BATCH, cpu_replicas: int = 1) -> Layout:
    """Choose the GPU group size (weights sharded over the group with ``device_map``) and
    run as many replicas of it as the GPUs allow, maximising replicas x batch; a group
    must hold the weights plus ``min_batch`` sequences (``seq_bytes``: KV cache of one
    prompt + typical answer, plus its logits). The batch is what the rest holds (<= 256).
    Without GPUs: ``cpu_replicas`` replicas on the CPU (``cpu_replica_count``).
    """
    if n_gpus <= 0:
        return Layout("cpu", 0, 0, cpu_replicas, [[] for _ in range(cpu_replicas)], [{} for _ in range(cpu_replicas)],
                      model_bytes, 0, 0, 0)
    usable = gpu_bytes - overhead_bytes

    def batch_for(group: int) -> int:
        return rows_that_fit(int((group * usable - model_bytes) * 0.9), seq_bytes, MAX_BATCH, min_rows=0)

    fits = [size for size in range(1, n_gpus + 1) if batch_for(size) >= min_batch]
    if not fits:
        raise ValueError(
            f"the model ({model_bytes / 1e9:.1f} GB) plus the KV cache of {min_batch} answers does not fit "
            f"{n_gpus} GPU(s) of {gpu_bytes / 1e9:.0f} GB: give more GPUs (--gpus) or a smaller model (--model)")
    # Decoding reads all weights every step whatever the batch (memory bound up to a few
    # hundred rows), and a device_map shard runs its GPUs one after another: throughput
    # ~ replicas x batch. More replicas win unless a wider group buys a much larger batch
    # (70B on 80 GB GPUs: 2 GPUs leave room for ~30 answers, 4 GPUs for 256).
    group = max(fits, key=lambda size: ((n_gpus // size) * batch_for(size), -size))
    replicas = n_gpus // group
    groups = [list(range(r * group, (r + 1) * group)) for r in range(replicas)]
    budget = group * usable - model_bytes
    batch = batch_for(group)
    if batch >= 16:
        batch -= batch % 8
    # Weights spread evenly over the group with some slack for layer granularity; the rest
    # of each GPU is left to the KV cache.
    per_gpu = min(usable, int(model_bytes / group * 1.08) + 2 * GiB) if group > 1 else usable
    max_memory = [{g: per_gpu for g in grp} for grp in groups]
    mode = "single" if n_gpus == 1 else ("replicas" if group == 1 else "sharded")
    lay = Layout(mode, n_gpus, group, replicas, groups, max_memory, model_bytes, gpu_bytes, budget, batch)
    return lay


def device_map_on_meta(config, max_memory: dict, dtype=None) -> dict:
    """The ``device_map`` that ``from_pretrained(device_map="auto", max_memory=...)`` derives for
    one replica (balanced over the group, then filled in order), on the meta device."""
    import torch
    from accelerate import infer_auto_device_map, init_empty_weights
    from accelerate.utils import get_balanced_memory
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.bfloat16
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False, dtype=dtype)
    no_split = model._no_split_modules
    balanced = get_balanced_memory(model, max_memory=dict(max_memory), no_split_module_classes=no_split, dtype=dtype)
    return infer_auto_device_map(model, max_memory=balanced, no_split_module_classes=no_split, dtype=dtype)


def detect_gpus(requested: int | None) -> tuple[int, int]:
    """(number of GPUs to use, bytes of the smallest) from CUDA; ``requested`` caps the count."""
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    n = have if requested is None else requested
    if n > have:
        raise ValueError(f"--gpus {requested} but only {have} CUDA device(s) are visible")
    if n == 0:
        return 0, 0
    return n, min(torch.cuda.get_device_properties(i).total_memory for i in range(n))
