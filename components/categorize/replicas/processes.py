"""Starting one process per model replica (``python -m ...categorize.replicas.worker``) with the
environment ``accelerate`` expects, supervised (``supervisor``): the first replica that fails
stops the others and fails the step with its error. Returns their stats."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile

from .supervisor import run_supervised

WORKER_MODULE = "latent_verbalizer.components.categorize.replicas.worker"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn_replica_processes(spec: dict, n: int) -> list[dict]:
    """Run ``n`` replica processes on ``spec`` (each takes its share of ``spec["captions"]``
    with accelerate's ``split_between_processes``); returns their stats, or raises with the
    first failed rank's error after stopping the others."""
    with tempfile.TemporaryDirectory(prefix="lverb-categorize-") as tmp:
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        port = _free_port()
        stats_paths = [os.path.join(tmp, f"stats-{rank}.json") for rank in range(n)]
        envs = [dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(n), LOCAL_WORLD_SIZE=str(n),
                     MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)) for rank in range(n)]
        commands = [[sys.executable, "-m", WORKER_MODULE, spec_path, path] for path in stats_paths]
        try:
            run_supervised(commands, envs, tmp, "categorize replica processes")
        except RuntimeError as error:
            raise RuntimeError(f"{error}\nRe-run the same command to resume from the answers already stored.") from None
        stats = []
        for path in stats_paths:
            with open(path) as f:
                stats.append(json.load(f))
        return stats
