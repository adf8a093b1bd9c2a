"""Replica processes stand or fall together: real child processes, a failing rank stops its
siblings and fails the step with its error; a killed parent takes its children with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from latent_verbalizer.components.categorize.replicas.supervisor import run_supervised

REPO = Path(__file__).resolve().parents[3]

# A child of run_supervised: writes its pid, then either sleeps long or, once its sibling's
# pid file exists (the sibling is surely running), fails.
CHILD = textwrap.dedent("""
    import os, sys, time
    from latent_verbalizer.components.categorize.replicas.supervisor import supervised_child

    def main():
        workdir, rank, role = sys.argv[1], sys.argv[2], sys.argv[3]
        with open(os.path.join(workdir, f"pid-{rank}"), "w") as f:
            f.write(str(os.getpid()))
        if role == "sleep":
            time.sleep(120)
        else:
            while not os.path.exists(os.path.join(workdir, "pid-0")):
                time.sleep(0.05)
            raise ValueError("rank 1 could not load its model shard (injected)")

    supervised_child(main)
""")


def _gone(pid: int) -> bool:
    """The process no longer runs (exited and reaped, or a zombie left for init to reap)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_for(condition, what: str, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what} after {limit_s:.0f}s")
        time.sleep(0.1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_failed_rank_stops_its_siblings_and_names_its_error(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    commands = [[sys.executable, "-c", CHILD, str(tmp_path), "0", "sleep"],
                [sys.executable, "-c", CHILD, str(tmp_path), "1", "fail"]]
    with pytest.raises(RuntimeError) as failed:
        run_supervised(commands, [env, env], str(tmp_path), "test replicas", grace_seconds=5)
    message = str(failed.value)
    assert "rank 1 of 2 failed (exit code 1)" in message
    assert "ValueError: rank 1 could not load its model shard (injected)" in message
    sibling = int((tmp_path / "pid-0").read_text())
    assert _gone(sibling)                    # stopped, not left sleeping for its 120 s


def test_a_replica_worker_error_reaches_the_step(small_labels, tmp_path, one_thread_env):
    """The real worker: every rank fails at once on a label file that does not exist, and the
    step's error names the rank and the file (not just "see their log")."""
    from latent_verbalizer.components.categorize.replicas.processes import spawn_replica_processes

    missing = str(tmp_path / "no-such-labels.yaml")
    spec = dict(captions=["a dog", "a cat"], model="tiny-random-llama", labels_uri=missing, dtype="float32",
                out_uri=str(tmp_path / "out"), run_key="k", batch_size=2, groups=[[], []], max_memory=[{}, {}],
                answers_per_file=4, made_by={}, max_parts=None)
    with pytest.raises(RuntimeError, match=r"rank \d of 2 failed \(exit code 1\)(.|\n)*no-such-labels\.yaml") as failed:
        spawn_replica_processes(spec, 2)
    assert "resume" in str(failed.value)


PARENT = textwrap.dedent("""
    import os, sys
    from latent_verbalizer.components.categorize.replicas.supervisor import run_supervised
    workdir, child = sys.argv[1], sys.argv[2]
    run_supervised([[sys.executable, "-c", child, workdir, str(r), "sleep"] for r in range(2)], [dict(os.environ)] * 2,
                   workdir, "test")
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killing_the_parent_kills_its_children(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path), CHILD], env=env)
    try:
        _wait_for(lambda: (tmp_path / "pid-0").exists() and (tmp_path / "pid-1").exists(), "both children to start")
        children = [int((tmp_path / f"pid-{r}").read_text()) for r in range(2)]
        parent.send_signal(signal.SIGKILL)              # no chance to stop them itself
        parent.wait()
        _wait_for(lambda: all(_gone(pid) for pid in children), "the children to die with their parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
