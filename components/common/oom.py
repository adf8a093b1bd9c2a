"""The one out-of-memory back-off of the GPU steps (extract, caption, categorize).

A batch that runs out of GPU memory is retried at half the size, and the smaller size is
kept for the batches after it. The retry happens only after the ``except`` block has been
left: while the handler runs, the exception's traceback holds the frames of the failed
call, and with them every tensor it had allocated (activations, a KV cache), so a retry
from inside the handler runs out of memory again and ``empty_cache()`` frees nothing.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator, TypeVar

import torch

log = logging.getLogger(__name__)

T = TypeVar("T")


class OutOfMemoryBackoff:
    """The current batch size of one step, halved on every CUDA out-of-memory error.

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
        """``(True, fn(*args))``, or ``(False, None)`` after an out-of-memory error, with the
        batch size halved below ``size`` (the size that failed) and the GPU cache emptied."""
        try:
            return True, fn(*args)
        except torch.OutOfMemoryError:
            pass  # leave the handler first: its traceback keeps the failed batch's tensors alive
        self.ooms += 1
        if size <= 1:
            raise torch.OutOfMemoryError(f"{self.what}: out of GPU memory at batch size 1; {self.advice}")
        self.batch_size = max(1, min(self.batch_size, size // 2))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning("%s: out of GPU memory at batch size %d, going on with %d", self.what, size, self.batch_size)
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
