"""What ``lverb run --local`` shows while it runs: a line per step, full logs in a file.

``kfp.local`` prints every step's executor input, its streamed output and its outputs to
stdout (several hundred lines for the demo). ``RunConsole`` stands in for ``sys.stdout``
and ``sys.stderr`` while the pipeline runs: everything goes to the run's log file; the
terminal gets one line per finished step (its name, status, time, and the rate line the
step's own progress logged), and on a failure the step's last lines. ``verbose=True``
shows everything live as well.

kfp.local runs a ParallelFor's iterations in threads, each streaming its step's output
from the thread that runs it, so lines are attributed to steps per thread.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections import deque
from typing import TextIO

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Step boundaries, from the step's own streamed output (KFP's executor logs them inside the
# step's process). kfp.local's own "Executing task"/"finished" log lines are not used: it
# swaps the root logger's handlers per task, so with ParallelFor threads some are lost.
STARTED = re.compile(r"Looking for component `(\w+)`")
DONE = re.compile(r"Wrote executor output file to (\S+)/executor_output\.json")
FAILED = re.compile(r"Task '([^']+)' finished with status FAILURE")
CACHE_HIT = re.compile(r"Task '?([^' ]+)'? cache hit")
# The summary line of components.common.progress.Progress ("caption sample-000000: 24/24 captions in
# 12.1s (1.98 captions/s)"), after the log prefix KFP's executor puts before it.
RATE = re.compile(r"\]: (\S[^:]*: \d+(?:/\d+)? \S+ in [\d.]+s \([\d.]+ \S+/s.*\))\s*$")
TAIL_LINES = 40


class _Step:
    def __init__(self, component: str):
        self.component, self.started, self.rate = component, time.perf_counter(), ""
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)


class RunConsole:
    """A file-like object for ``sys.stdout``/``sys.stderr`` during a local run."""

    def __init__(self, log_file: TextIO, terminal: TextIO, verbose: bool = False):
        self.log_file, self.terminal, self.verbose = log_file, terminal, verbose
        self._lock = threading.Lock()
        self._local = threading.local()
        self._running: dict[int, _Step] = {}  # thread id -> the step it streams
        self.steps_done = 0

    # -- the file protocol print() and logging need
    def write(self, text: str) -> int:
        with self._lock:
            self.log_file.write(text)
            if self.verbose:
                self.terminal.write(text)
        pending = getattr(self._local, "pending", "") + text
        *lines, self._local.pending = pending.split("\n")
        for line in lines:
            self._line(ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self.log_file.flush()
            self.terminal.flush()

    def isatty(self) -> bool:  # tqdm and our Progress then log lines instead of redrawing bars
        return False

    # -- one line per step
    def _line(self, line: str) -> None:
        me = threading.get_ident()
        if m := STARTED.search(line):
            self._running[me] = _Step(m.group(1))
            return
        step = self._running.get(me)
        if step is not None and line.strip():
            step.tail.append(line)
        if m := RATE.search(line):
            if step is not None:
                step.rate = m.group(1)
        elif m := DONE.search(line):
            self._running.pop(me, None)
            self.steps_done += 1
            name = m.group(1).rsplit("/", 1)[-1]
            seconds = time.perf_counter() - step.started if step else 0.0
            self.say(f"  {name:<28} {'done':<8} {seconds:6.1f}s  {step.rate if step else ''}".rstrip())
        elif m := FAILED.search(line):
            self.say(f"  {m.group(1):<28} FAILED")
        elif m := CACHE_HIT.search(line):
            self.say(f"  {m.group(1):<28} cached (kfp.local cache)")

    def report_unfinished(self) -> None:
        """After a failure: the last lines of every step that did not finish."""
        for step in list(self._running.values()):
            self.say(f"  {step.component} did not finish; the last lines of its log:\n"
                     + "\n".join(f"    | {line}" for line in step.tail))

    def say(self, text: str) -> None:
        """A line for the terminal (and the log file)."""
        with self._lock:
            self.log_file.write(text + "\n")
            self.terminal.write(text + "\n")
            self.terminal.flush()


def open_console(log_path: str, verbose: bool) -> tuple[RunConsole, TextIO]:
    """A console writing to ``log_path`` and the real terminal (``sys.__stdout__``)."""
    log_file = open(log_path, "a", buffering=1)
    return RunConsole(log_file, sys.__stdout__, verbose=verbose), log_file
