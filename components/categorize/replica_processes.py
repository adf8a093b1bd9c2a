"""Starting one process per model replica (``python -m ...categorize.worker``) with the
environment ``accelerate`` expects, and collecting their stats."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile

WORKER_MODULE = "latent_verbalizer.components.categorize.worker"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn_replica_processes(spec: dict, n: int) -> list[dict]:
    """Run ``n`` replica processes on ``spec`` (each takes its share with accelerate's
    ``split_between_processes``); returns their stats, or raises naming the failed ranks."""
    with tempfile.TemporaryDirectory(prefix="lverb-categorize-") as tmp:
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        port = _free_port()
        procs = []
        for rank in range(n):
            env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(n), LOCAL_WORLD_SIZE=str(n),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            stats_path = os.path.join(tmp, f"stats-{rank}.json")
            procs.append((stats_path, subprocess.Popen([sys.executable, "-m", WORKER_MODULE, spec_path, stats_path], env=env)))
        failed = [rank for rank, (_, proc) in enumerate(procs) if proc.wait() != 0]
        if failed:
            raise RuntimeError(f"categorize replica process(es) {failed} failed (see their log above); "
                               "re-run the same command to resume from the answers already stored")
        stats = []
        for stats_path, _ in procs:
            with open(stats_path) as f:
                stats.append(json.load(f))
        return stats
