"""The one out-of-memory back-off of the GPU steps (extract, caption, categorize).

A batch that runs out of GPU memory is retried at half the size, and the smaller size is
kept for the batches after it. The retry happens only after the ``except`` block has been
left: while the handler runs, the exception's traceback holds the frames of the failed
call, and with them every tensor it had allocated (activations, a KV cache), so a retry
from inside the handler runs out of memory again and ``empty_cache()`` frees nothing.
"""

from __future__ import annotations

import logging
import re
from typing import Callable, Iterator, TypeVar

import torch

log = logging.getLogger(__name__)

T = TypeVar("T")

# Allocation failures that reach Python as a plain RuntimeError rather than torch.OutOfMemoryError
# (which only the caching allocator raises). Each is matched by the text its library puts in it:
# - torch's CUDA checks (C10_CUDA_CHECK, ATen/cuda/Exceptions.h; torch.AcceleratorError, a RuntimeError,
#   since torch 2.8): "CUDA error: out of memory"
#   (cudaErrorMemoryAllocation, e.g. a kernel's workspace or a cuBLASLt/cuDNN plan);
# - cuBLAS, cuDNN, cuSOLVER, cuFFT status codes, reported by the same checks as
#   "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`" and the like
#   (ATen/cuda/Exceptions.h: TORCH_CUDABLAS_CHECK, AT_CUDNN_CHECK, ...);
# - Triton's launcher and module loader (triton/backends/nvidia/driver.c, gpuAssert):
#   RuntimeError("Triton Error [CUDA]: " + cuGetErrorString(code)), i.e.
#   "Triton Error [CUDA]: out of memory" for CUDA_ERROR_OUT_OF_MEMORY (xgrammar's mask kernel is Triton).
# Not an allocation failure: Triton's OutOfResources ("out of resource: shared memory, Required: ...")
# is a kernel whose block needs more shared memory than the GPU has, whatever the batch, so a
# smaller batch would not help; it propagates like every other error.
_ALLOCATION_FAILURE = re.compile(r"\bout of memory\b|\b(CUBLAS|CUDNN|CUSOLVER|CUSPARSE)_STATUS_ALLOC_FAILED\b|\bCUFFT_ALLOC_FAILED\b")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a failed GPU allocation, which a smaller batch may avoid: torch's
    ``OutOfMemoryError``, or a ``RuntimeError`` from CUDA, a CUDA library or Triton that says so."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and bool(_ALLOCATION_FAILURE.search(str(error)))


class OutOfMemoryBackoff:
    """The current batch size of one step, halved on every GPU allocation failure (``is_out_of_memory``).

    ``what`` names the step in log lines and in the final error; ``advice`` says what to do
    when even one item does not fit.
    """

    def __init__(self, batch_size: int, what: str, advice: str = "use a GPU with more memory"):
        if int(batch_size) < 1:
            raise ValueError(f"{what}: batch size must be >= 1, not {batch_size}")
        self.batch_size = int(batch_size)
        self.what = what
        self.advice = advice
        self.ooms = 0

    def attempt(self, fn: Callable[..., T], size: int, *args) -> tuple[bool, T | None]:
        """``(True, fn(*args))``, or ``(False, None)`` after a GPU allocation failure, with the
        batch size halved below ``size`` (the size that failed) and the GPU cache emptied.
        Any other error propagates."""
        try:
            return True, fn(*args)
        except RuntimeError as error:           # torch.OutOfMemoryError is a RuntimeError too
            if not is_out_of_memory(error):
                raise
            failure = str(error).splitlines()[0] if str(error) else type(error).__name__
            # leave the handler first: its traceback keeps the failed batch's tensors alive
        self.ooms += 1
        if size <= 1:
            raise torch.OutOfMemoryError(f"{self.what}: out of GPU memory at batch size 1; {self.advice} (the error: {failure})")
        self.batch_size = max(1, min(self.batch_size, size // 2))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning("%s: out of GPU memory at batch size %d (%s), going on with %d", self.what, size, failure, self.batch_size)
        return False, None


def backoff_batches(total: int, backoff: OutOfMemoryBackoff,
                    run: Callable[[int, int], T]) -> Iterator[tuple[int, int, T]]:
    """``run(start, n)`` over ``[0, total)`` in batches of ``backoff.batch_size``; a batch
    that runs out of memory is retried from the same ``start`` at the smaller size.
    Yields ``(start, n, result)`` in order."""
    start = 0
    while start < total:
        n = min(backoff.batch_size, total - start)
        ok, result = backoff.attempt(run, n, start, n)
        if ok:
            yield start, n, result
            result = None  # not held while the next batch runs (it may be a batch of GPU tensors)
            start += n
