"""Which device a step computes on, and a loud failure when a GPU step sees no GPU.

The pipeline sets ``LVERB_REQUIRE_GPU=1`` on every step it gives GPUs (``kfp.local`` runs
set nothing). Such a step that sees fewer GPUs than it was given stops at once with what
the process sees (``CUDA_VISIBLE_DEVICES``, the device count, the driver), instead of
running a 70B model on the CPU. ``--device cpu`` is always honoured (laptops, the demo).
"""

from __future__ import annotations

import os

import torch

REQUIRE_GPU_ENV = "LVERB_REQUIRE_GPU"


class GpuNotVisibleError(RuntimeError):
    """A GPU was asked for (by the pipeline or ``--device cuda``) but the process sees too few."""


def gpu_required() -> bool:
    """True when the pipeline gave this step GPUs (``LVERB_REQUIRE_GPU`` set to 1/true/yes)."""
    return os.environ.get(REQUIRE_GPU_ENV, "").strip().lower() in ("1", "true", "yes")


def visible_gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def what_the_process_sees() -> str:
    """CUDA_VISIBLE_DEVICES, torch's device count and CUDA build, and the NVIDIA driver, in one line."""
    driver_file = "/proc/driver/nvidia/version"
    if os.path.exists(driver_file):
        with open(driver_file) as f:
            driver = f.readline().strip() or "present"
    else:
        driver = f"not loaded (no {driver_file})"
    return (f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}, "
            f"torch.cuda.device_count()={visible_gpu_count()}, torch {torch.__version__} built for CUDA "
            f"{torch.version.cuda or 'none (a CPU-only build)'}, NVIDIA driver: {driver}")


def _not_visible(asked: str) -> GpuNotVisibleError:
    return GpuNotVisibleError(
        f"{asked}, but this process sees {visible_gpu_count()} CUDA GPU(s): {what_the_process_sees()}. "
        "On Kubernetes, check the pod's GPU limit (gpu_accelerator_type), the node's NVIDIA device plugin and "
        "the image's CUDA build; to run on the CPU on purpose, pass --device cpu (and leave "
        f"{REQUIRE_GPU_ENV} unset)."
    )


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda:0`` when a GPU is visible, else ``cpu`` (an error instead when the
    pipeline gave this step a GPU); ``cuda``/``cuda:N`` -> ``cuda:N`` (``cuda`` is ``cuda:0``),
    an error naming what is visible when it is not; ``cpu`` -> ``cpu``.

    A CUDA device always comes back with its index: torch's per-device calls
    (``torch.cuda.set_device``, events and streams of a device) refuse an index-less
    ``torch.device("cuda")`` with a ValueError, so no caller ever has to add one.
    """
    device = str(device or "auto").strip().lower()
    if device == "cpu":
        return device
    if device == "auto":
        if visible_gpu_count():
            return "cuda:0"
        if gpu_required():
            raise _not_visible(f"this step was given a GPU ({REQUIRE_GPU_ENV}={os.environ[REQUIRE_GPU_ENV]})")
        return "cpu"
    if device != "cuda" and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ValueError(f"--device {device!r}: use auto, cpu, cuda or cuda:N")
    index = int(device[5:]) if ":" in device else 0
    if index >= visible_gpu_count():
        raise _not_visible(f"--device {device} asked for")
    return f"cuda:{index}"


def usable_gpus(requested: int) -> int:
    """How many of ``requested`` GPUs to use: those visible, at most ``requested``. When the
    pipeline gave the step GPUs, seeing fewer than ``requested`` is an error."""
    visible = visible_gpu_count()
    if gpu_required() and visible < requested:
        raise _not_visible(f"this step was given {requested} GPU(s) ({REQUIRE_GPU_ENV}={os.environ[REQUIRE_GPU_ENV]})")
    return min(int(requested), visible)


def usable_cpu_cores() -> int:
    """CPU cores this process may use: its affinity mask, bounded by a cgroup CPU quota where one
    is set (a Kubernetes CPU limit shows there, not in the mask)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:          # cgroup v2: "<quota> <period>" or "max <period>"
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def available_host_bytes() -> int | None:
    """Host memory available to new work (``MemAvailable``), None where the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None
