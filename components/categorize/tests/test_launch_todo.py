"""Under ``accelerate launch`` the to-do list is worked out once (rank 0) and shared: two real
rank processes (CPU, gloo), with answers added to the store between their starts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from latent_verbalizer.components.categorize.answer_store import STORED_ANSWER_SCHEMA, AnswerStore
from latent_verbalizer.components.common.contracts import LABELS_SCHEMA
from latent_verbalizer.components.common.tables import read_table
from tests.captions_by_layer import write_captions

REPO = Path(__file__).resolve().parents[3]


# One process of `accelerate launch` (the environment it gives each rank is set by the test);
# the layout planner is told of two CPU replicas, as GPUs would give.
RANK = textwrap.dedent("""
    import sys
    from latent_verbalizer.components.categorize import categorize
    from latent_verbalizer.components.categorize.llm.layout import Layout

    categorize.plan_for_model = lambda *a, **k: Layout(mode="cpu", n_gpus=0, gpus_per_replica=0, replicas=2,
                                                       groups=[[], []], max_memory=[{}, {}])
    captions, out, labels = sys.argv[1:4]
    categorize.run_categorize([captions], out, model="tiny-random-llama", labels_uri=labels, batch_size=4)
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ranks_share_one_todo_list(sample, small_labels, tmp_path):
    caps = list(dict.fromkeys(sample(12, layers=[8, 19])))
    captions = str(tmp_path / "caps.parquet")
    write_captions(captions, {8: caps})
    out = tmp_path / "out"
    port = _free_port()

    def start(rank: int) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", RANK=str(rank), LOCAL_RANK=str(rank),
                   WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        return subprocess.Popen([sys.executable, "-c", RANK, captions, str(out), small_labels], env=env)

    procs = [start(0)]
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("answers/*/todo.json")):
            assert procs[0].poll() is None and time.monotonic() < deadline, "rank 0 wrote no shared to-do list"
            time.sleep(0.1)
        (todo_file,) = out.glob("answers/*/todo.json")
        # another writer stores answers of two captions before rank 1 starts: rank 1 must not see a shorter list
        AnswerStore(str(out), todo_file.parent.name, writer="late").write(
            [{"caption": c, "parts": [], "model": "elsewhere", "status": "no_parts", "answer": "", "n_new_tokens": 0}
             for c in caps[:2]], {})
        procs.append(start(1))
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes == [0, 0]
    todo = json.loads(todo_file.read_text())["captions"]
    assert todo == caps                                     # rank 0 found nothing stored
    by_writer = {}
    for path in todo_file.parent.glob("answers-r*.parquet"):
        by_writer.setdefault(path.name.split("-")[1], []).extend(r["caption"] for r in read_table(str(path), STORED_ANSWER_SCHEMA).to_pylist())
    half = len(todo) - len(todo) // 2
    # the same split on both ranks: no caption labelled twice, none left out
    assert {w: sorted(c) for w, c in by_writer.items()} == {"r0": sorted(todo[:half]), "r1": sorted(todo[half:])}
    assert set(read_table(str(out / "labels.parquet"), LABELS_SCHEMA).column("caption").to_pylist()) == set(caps)
