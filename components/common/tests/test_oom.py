"""The one out-of-memory back-off: halves, keeps the smaller size, retries only after the
``except`` block is left (so the failed batch's tensors are already freed), gives up at 1."""

from __future__ import annotations

import weakref

import pytest
import torch

from latent_verbalizer.components.common.oom import OutOfMemoryBackoff, backoff_batches, is_out_of_memory


def test_failed_batch_is_freed_before_the_retry():
    """The retry must not start while the failed attempt's tensors (e.g. its KV cache) are
    alive: the old caption back-off retried inside the handler, where they still were."""
    alive_at_retry = []
    failed = []

    def decode(start, n):
        if failed:
            alive_at_retry.append(any(ref() is not None for ref in failed))
        cache = torch.empty(n, 1024)  # what the failed batch had allocated
        if n > 2:
            failed.append(weakref.ref(cache))
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return list(range(start, start + n))

    backoff = OutOfMemoryBackoff(8, "test")
    done = list(backoff_batches(10, backoff, decode))
    assert alive_at_retry and not any(alive_at_retry)
    assert [item for _, _, part in done for item in part] == list(range(10))
    assert [n for _, n, _ in done] == [2, 2, 2, 2, 2] and backoff.batch_size == 2 and backoff.ooms == 2


def test_smaller_size_is_kept_and_one_that_never_fits_is_a_clear_error():
    def too_big():
        raise torch.OutOfMemoryError("injected")

    backoff = OutOfMemoryBackoff(16, "caption", advice="decode on a bigger GPU")
    ok, _ = backoff.attempt(too_big, 12)
    assert not ok and backoff.batch_size == 6
    ok, value = backoff.attempt(lambda: "fits", 6)
    assert ok and value == "fits" and backoff.batch_size == 6

    def never(start, n):
        raise torch.OutOfMemoryError("injected")

    with pytest.raises(torch.OutOfMemoryError, match="caption: out of GPU memory at batch size 1; decode on a bigger GPU"):
        list(backoff_batches(3, OutOfMemoryBackoff(4, "caption", advice="decode on a bigger GPU"), never))


def test_other_errors_pass_through_and_bad_sizes_are_refused():
    def broken(start, n):
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError, match="not a memory problem"):
        list(backoff_batches(3, OutOfMemoryBackoff(4, "x"), broken))
    with pytest.raises(ValueError, match="batch size must be >= 1"):
        OutOfMemoryBackoff(0, "extract")


@pytest.mark.parametrize("error, is_oom", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
    (RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"), True),
    (RuntimeError("Triton Error [CUDA]: out of memory"), True),
    (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True),
    (RuntimeError("out of resource: shared memory, Required: 262144, Hardware limit: 232448."), False),
    (RuntimeError("CUDA error: device-side assert triggered"), False),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x8)"), False),
    (ValueError("out of memory"), False),
])
def test_which_errors_are_allocation_failures(error, is_oom):
    assert is_out_of_memory(error) is is_oom


def test_runtime_error_allocation_failures_back_off_and_others_propagate():
    """cuBLAS and Triton report a failed allocation as a plain RuntimeError: halved like
    torch.OutOfMemoryError; a RuntimeError that is not about memory is raised at once."""
    def decode(start, n):
        if n > 3:
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
        return list(range(start, start + n))

    backoff = OutOfMemoryBackoff(8, "test")
    done = list(backoff_batches(7, backoff, decode))
    assert [item for _, _, part in done for item in part] == list(range(7)) and backoff.ooms == 1 and backoff.batch_size == 3

    def shape_bug(start, n):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x8)")

    backoff = OutOfMemoryBackoff(8, "test")
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        list(backoff_batches(7, backoff, shape_bug))
    assert backoff.ooms == 0 and backoff.batch_size == 8
