"""Helpers of the GPU test suite (``pytest -m gpu``; deselected by default).

Every GPU test module sets ``pytestmark = GPU_ONLY``: the tests are marked ``gpu`` and skip
only when no CUDA device is visible. Nothing else may skip them: where a GPU is visible they
run or fail (``benchmarks/gpu_check.sh`` runs them with ``CI=true``, under which the root
conftest turns any skip into a failure). Figures the tests measure go to the Markdown file
named by ``LVERB_GPU_REPORT`` (and to stdout), so the GPU check's report can include them.
"""

from __future__ import annotations

import contextlib
import functools
import os

import pytest
import torch

GPU_ONLY = [pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible (run on a GPU machine)")]


def report(title: str, lines: list[str]) -> None:
    """Append a section of figures to the GPU check's report (``LVERB_GPU_REPORT``), and print it."""
    text = "\n".join([f"#### {title}", "", *lines, ""])
    print(text)
    path = os.environ.get("LVERB_GPU_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


@functools.lru_cache(maxsize=1)
def full_size_coca():
    """Random-weight coca_ViT-L-14 (the study's architecture), loaded once per test process."""
    from latent_verbalizer.components.common.model_families import load_model

    return load_model("coca_ViT-L-14", "random")


def peak_extra_bytes(fn) -> tuple[int, object]:
    """(peak GPU memory allocated by ``fn`` above what was allocated before, its result)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    result = fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before, result


@contextlib.contextmanager
def capped_gpu_memory(extra_bytes: int):
    """Cap this process's GPU memory at what it holds now plus ``extra_bytes``, with
    ``torch.cuda.set_per_process_memory_fraction``: beyond it the caching allocator fails
    a real allocation with ``torch.OutOfMemoryError``. The cap is lifted afterwards."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    limit = torch.cuda.memory_reserved() + extra_bytes
    torch.cuda.set_per_process_memory_fraction(min(1.0, limit / total))
    try:
        yield limit
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()


def full_size_coca_on_cuda():
    """``full_size_coca()`` moved to the GPU (once: the same object every time)."""
    loaded = full_size_coca()
    loaded.model.to("cuda")
    return loaded
