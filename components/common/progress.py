"""Progress that reads well in a terminal and in KFP's logs.

In a terminal: a tqdm bar. Without one (KFP pods, CI): a log line every
``LOG_EVERY_S`` seconds with counts and rates, since a redrawn bar is unreadable there.
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm.auto import tqdm

LOG_EVERY_S = 15.0


class Progress:
    """Counts items (and optionally bytes) and reports rates: ``images/s``, ``MB/s``.

    ``bar=False``: no bar even in a terminal, only the log lines (for work whose own bars show
    elsewhere, e.g. child processes'), ending with the summary line."""

    def __init__(self, desc: str, unit: str, total: int | None = None, logger: logging.Logger | None = None,
                 bar: bool = True):
        self.desc, self.unit, self.total = desc, unit, total
        self.count = 0
        self.nbytes = 0
        self.start = time.perf_counter()
        self._last_log = self.start
        self.log = logger or logging.getLogger("lverb.progress")
        self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True) if bar and sys.stderr.isatty() else None

    def update(self, n: int, nbytes: int = 0) -> None:
        self.count += n
        self.nbytes += nbytes
        if self.bar is not None:
            self.bar.update(n)
            if self.nbytes:
                self.bar.set_postfix_str(f"{self.mb_per_s:.1f} MB/s")
        elif self.count != self.total and time.perf_counter() - self._last_log >= LOG_EVERY_S:  # close() logs the last
            self._last_log = time.perf_counter()
            self.log.info(self.summary())

    @property
    def elapsed(self) -> float:
        return max(time.perf_counter() - self.start, 1e-9)

    @property
    def rate(self) -> float:
        return self.count / self.elapsed

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / 1e6 / self.elapsed

    def summary(self) -> str:
        total = f"/{self.total}" if self.total else ""
        extra = f", {self.nbytes / 1e6:.1f} MB, {self.mb_per_s:.1f} MB/s" if self.nbytes else ""
        return f"{self.desc}: {self.count}{total} {self.unit} in {self.elapsed:.1f}s ({self.rate:.2f} {self.unit}/s{extra})"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.log.info(self.summary())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
