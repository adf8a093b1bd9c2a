"""Child processes that stand or fall together (the replica processes of the categorize step).

``run_supervised`` starts one process per rank and watches all of them at once: the first
that fails stops its siblings (SIGTERM, then SIGKILL after a grace period) and the step
fails with that rank's error, the traceback the child wrote to its error file (or, when it
died without one, how it exited). If the supervising process itself is interrupted, its
children are stopped too; if it is killed outright, each child's parent-death signal
(``die_with_parent``) takes it down, so no replica goes on holding GPUs for a dead step.

``supervised_child`` is the child's side: it arms the parent-death signal and writes the
traceback of an exception to the file the supervisor named.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Callable

log = logging.getLogger(__name__)

ERROR_FILE_ENV = "LVERB_CHILD_ERROR_FILE"      # where a child writes its traceback
PARENT_PID_ENV = "LVERB_SUPERVISOR_PID"        # the supervisor's pid, checked by the child at start
GRACE_SECONDS = 15.0                           # between SIGTERM and SIGKILL when siblings are stopped
POLL_SECONDS = 0.2
ERROR_TAIL_CHARS = 6000
_PR_SET_PDEATHSIG = 1                          # linux/prctl.h


def run_supervised(commands: list[list[str]], envs: list[dict], workdir: str, what: str,
                   grace_seconds: float = GRACE_SECONDS) -> None:
    """Run ``commands[rank]`` with ``envs[rank]`` for every rank, all at once, until all exit 0.

    The first rank to exit non-zero stops the others and raises ``RuntimeError`` naming the
    rank and its error. Start and wait from the same thread: the children's parent-death
    signal follows the thread that started them. ``workdir`` holds the children's error files.
    """
    procs: list[subprocess.Popen] = []
    try:
        for rank, (cmd, env) in enumerate(zip(commands, envs)):
            env = dict(env, **{ERROR_FILE_ENV: _error_file(workdir, rank), PARENT_PID_ENV: str(os.getpid())})
            procs.append(subprocess.Popen(cmd, env=env))
        running = list(range(len(procs)))
        while running:
            for rank in list(running):
                code = procs[rank].poll()
                if code is None:
                    continue
                running.remove(rank)
                if code != 0:
                    _stop([procs[r] for r in running], grace_seconds)
                    raise RuntimeError(f"{what}: rank {rank} of {len(procs)} failed ({_exit_text(code)}); "
                                       f"the other ranks were stopped. Its error:\n{_error_text(workdir, rank)}")
            if running:
                time.sleep(POLL_SECONDS)
    finally:
        _stop([p for p in procs if p.poll() is None], grace_seconds)   # interrupted: the children go too


def supervised_child(main: Callable[[], object]) -> None:
    """Run ``main`` as a child of ``run_supervised``: die with the parent, and leave the
    traceback of an exception where the supervisor reads it (then re-raise: exit 1)."""
    die_with_parent()
    try:
        main()
    except BaseException as error:
        if not (isinstance(error, SystemExit) and error.code in (0, None)):
            path = os.environ.get(ERROR_FILE_ENV)
            if path:
                with open(path, "w") as f:
                    f.write(traceback.format_exc())
        raise


def die_with_parent() -> None:
    """End this process when the process that started it ends (it may be killed without a
    chance to stop its children): Linux's parent-death signal, elsewhere a thread that
    watches the parent pid. Exits at once if the parent is already gone."""
    expected = int(os.environ.get(PARENT_PID_ENV) or os.getppid())
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        def watch() -> None:
            while os.getppid() == expected:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
    if os.getppid() != expected:            # the parent died before the signal was armed
        os._exit(1)


def _error_file(workdir: str, rank: int) -> str:
    return os.path.join(workdir, f"error-rank{rank}.txt")


def _error_text(workdir: str, rank: int) -> str:
    try:
        with open(_error_file(workdir, rank)) as f:
            text = f.read().strip()
    except FileNotFoundError:
        return "(it left no traceback: see its log above)"
    return text if len(text) <= ERROR_TAIL_CHARS else "..." + text[-ERROR_TAIL_CHARS:]


def _exit_text(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (the kernel's out-of-memory killer sends SIGKILL)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


def _stop(procs: list[subprocess.Popen], grace_seconds: float) -> None:
    """SIGTERM, then SIGKILL whatever is still running after ``grace_seconds``; reaps them all."""
    for p in procs:
        p.terminate()
    deadline = time.monotonic() + grace_seconds
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("process %d did not stop within %.0fs of SIGTERM: killing it", p.pid, grace_seconds)
            p.kill()
            p.wait()
