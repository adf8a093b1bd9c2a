"""Benchmark: do the steps that touch every row grow linearly? (issue 20, section 2)

Each case runs at two sizes, each run in a fresh Python process that reports its seconds and
its peak resident memory (``VmHWM``: the imports included; the resident memory after the
imports and the case's starting data, before the work, is given beside it). Every case runs ``--repeats`` times; the
table gives the fastest time (the machine may be shared) and the largest peak.

Cases (synthetic data of the real shapes, written by ``benchmarks/scale_data.py`` with the
project's own writers):

- ``preflight-local`` / ``preflight-s3``: what preflight does with the shard pattern
  (``storage.expand_pattern`` of a brace pattern naming every shard, then
  ``check_unique_shard_names``) for 1,000 and 10,000 shards, in a local folder and on the real S3
  server the tests use (SeaweedFS on loopback); ``preflight-s3-glob``: the same shards as a glob;
  ``preflight-s3-before``: the brace pattern as it was checked before (a HEAD request per name);
- ``aggregate-in-memory``: the aggregate the way categorize makes it in one process (every
  caption row and every answer as Python objects, then ``aggregate``);
- ``aggregate-streamed``: ``aggregate.aggregate_files`` from the captions tables and the
  partitions' labels tables (what the merge of partitioned labelling runs);
- ``labels-merge``: the partitions' labels tables into one (``labels_merge.merge_label_tables``);
- ``store-resume``: which captions a restarted categorize still has to label (the answer store's
  hashes read, then every distinct caption checked against them); ``store-resume-before``: the
  same with the whole store read as before (``AnswerStore.load`` of every column);
- ``store-load``: the stored answers read for the labels table (``store-load-before``: every column).

Sizes: ``--images`` 10,000 and 100,000 (240,000 and 2.4 million caption rows, 24 layers; the
answer store and the labels hold the distinct captions, 79% of the rows as in the study), and
1,000 and 10,000 shards. The cases that hold every row in memory run at 1,000 and 10,000 images.

    python benchmarks/scale.py                                   # everything, ~10 minutes on 2 cores
    python benchmarks/scale.py --cases aggregate-streamed --images 1000,10000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CASES = ("preflight-local", "preflight-s3-before", "preflight-s3", "preflight-s3-glob", "aggregate-in-memory", "aggregate-streamed",
         "labels-merge", "store-resume-before", "store-resume", "store-load-before", "store-load")
# Cases that hold every row in memory run at the smaller pair of sizes (--before-images).
IN_MEMORY = ("aggregate-in-memory", "store-resume-before", "store-load-before", "store-load")
PARTITIONS = 3


def rss_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------ the cases (run in a child process)

def setup_case(case: str, data: str) -> dict:
    """What a case's work starts from and is not measured: for the resume check, the distinct
    captions categorize holds (a list of strings)."""
    if not case.startswith("store-resume"):
        return {}
    import pyarrow.parquet as pq

    meta = json.loads(Path(data, "meta.json").read_text())
    return {"uniques": pq.read_table(meta["labels"], columns=["caption"]).column("caption").to_pylist()}


def run_case(case: str, data: str, setup: dict) -> int:
    """Do one case's work on the data prepared in ``data``; returns the rows (or shards) it handled."""
    from latent_verbalizer.components.categorize.answer_store import AnswerStore
    from latent_verbalizer.components.categorize.merge_table import load_merge_table
    from latent_verbalizer.components.common import storage
    from latent_verbalizer.components.common.contracts import caption_hash, check_unique_shard_names

    meta = json.loads(Path(data, "meta.json").read_text())
    if case == "preflight-s3-before":           # as before issue 20: a HEAD request per name of the pattern
        uris = [u for u in storage.expand_braces(meta["pattern"]) if storage.exists(u)]
        check_unique_shard_names(uris)
        return len(uris)
    if case.startswith("preflight"):
        uris = storage.expand_pattern(meta["glob" if case.endswith("glob") else "pattern"])
        check_unique_shard_names(uris)
        assert len(uris) == meta["shards"], (len(uris), meta["shards"])
        return len(uris)
    if case == "aggregate-in-memory":
        return _aggregate_in_memory(meta, load_merge_table())
    if case == "aggregate-streamed":
        from latent_verbalizer.components.categorize.aggregate import aggregate_files

        result = aggregate_files(meta["captions"], meta["labels_parts"], load_merge_table())
        return sum(sum(c.values()) for c in result.layer_status_counts.values())
    if case == "labels-merge":
        from latent_verbalizer.components.categorize.partitions.labels_merge import merge_label_tables

        return merge_label_tables(meta["labels_parts"], storage.join(data, "merged", "labels.parquet"), {})
    store = AnswerStore(meta["store"], "bench")
    if case.startswith("store-resume"):
        uniques = setup["uniques"]
        if case.endswith("before"):
            done = _load_before(store)
            todo = [c for c in uniques if caption_hash(c) not in done]
        else:
            todo = store.answered_hashes().missing(uniques)
        assert not todo
        return len(uniques)
    if case.startswith("store-load"):
        return len(_load_before(store) if case.endswith("before") else store.load())
    raise ValueError(f"unknown case {case!r}: choose from {', '.join(CASES)}")


def _load_before(store) -> dict:
    """``AnswerStore.load`` as it was before issue 20 (every column of every stored answer), which
    categorize also used to know which captions were done."""
    from latent_verbalizer.components.categorize.answer_store import STORED_ANSWER_SCHEMA
    from latent_verbalizer.components.common.tables import read_table

    done: dict = {}
    for uri in store.file_uris():
        for row in read_table(uri, STORED_ANSWER_SCHEMA).to_pylist():
            done.setdefault(row["caption_hash"], row)
    return done


def _aggregate_in_memory(meta: dict, category_of: dict) -> int:
    """What categorize does in one process: every caption row, every answer as objects, then ``aggregate``."""
    from latent_verbalizer.components.categorize.aggregate import aggregate, layer_status_counts
    from latent_verbalizer.components.categorize.captions_io import read_captions
    from latent_verbalizer.components.categorize.labelset import Part
    from latent_verbalizer.components.common.contracts import LABELS_SCHEMA
    from latent_verbalizer.components.common.tables import read_table

    rows = read_captions(meta["captions"])
    answer_of = {}
    for uri in meta["labels_parts"]:
        for r in read_table(uri, LABELS_SCHEMA).to_pylist():
            answer_of[r["caption"]] = ([Part(p["text"], tuple(p["labels"])) for p in r["parts"]], r["status"])
    per_row = [(r.layer, *answer_of[r.caption]) for r in rows]
    aggregate(per_row, category_of)
    layer_status_counts(per_row)
    return len(per_row)


def child(case: str, data: str) -> None:
    # the imports every case pays before its work, and its unmeasured starting point
    import numpy  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import latent_verbalizer.components.categorize.aggregate  # noqa: F401
    from latent_verbalizer.components.common import storage  # noqa: F401

    setup = setup_case(case, data)
    base = rss_mb("VmRSS")
    t0 = time.perf_counter()
    rows = run_case(case, data, setup)
    seconds = time.perf_counter() - t0
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_mb": rss_mb("VmHWM"), "base_mb": base}))


# ------------------------------------------------------------------ preparing the data (parent process)

def prepare_rows(folder: str, images: int) -> dict:
    """Captions of ``images`` x 24 layers (shards of 1,000 images), their labels whole and in partitions, an answer store."""
    from benchmarks import scale_data

    meta_path = Path(folder, "meta.json")
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    t0 = time.perf_counter()
    ids = scale_data.caption_ids(images)
    captions = scale_data.write_captions(os.path.join(folder, "captions"), ids, images_per_shard=1000)
    table = scale_data.label_rows(int(ids.max()) + 1)
    labels, parts = scale_data.write_labels(os.path.join(folder, "labels"), table, PARTITIONS)
    store_base = os.path.join(folder, "out")
    scale_data.write_answer_store(store_base, table)
    meta = {"images": images, "rows": len(ids), "distinct": table.num_rows, "captions": captions, "labels": labels,
            "labels_parts": parts, "store": store_base}
    meta_path.write_text(json.dumps(meta))
    print(f"  prepared {images:,} images: {len(ids):,} caption rows, {table.num_rows:,} distinct, "
          f"{len(captions)} captions files ({time.perf_counter() - t0:.0f} s)", flush=True)
    return meta


def prepare_shards(folder: str, n: int, s3_base: str | None) -> dict:
    from benchmarks import scale_data

    meta_path = Path(folder, "meta.json")
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    pattern = scale_data.write_shard_files(os.path.join(folder, "shards"), n)
    meta = {"shards": n, "pattern": pattern, "glob": os.path.join(folder, "shards", "shard-*.tar")}
    if s3_base:
        meta = {"shards": n, "pattern": f"{s3_base}/shards{n}/shard-{{00000..{n - 1:05d}}}.tar",
                "glob": f"{s3_base}/shards{n}/shard-*.tar"}
        _upload_shards(f"{s3_base}/shards{n}", n)
    meta_path.write_text(json.dumps(meta))
    return meta


def _upload_shards(prefix: str, n: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from latent_verbalizer.components.common import storage

    storage.ensure_bucket(prefix + "/x")
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: storage.write_bytes(f"{prefix}/shard-{i:05d}.tar", b"x"), range(n)))


def measure(case: str, data: str, repeats: int, env: dict) -> dict:
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, __file__, "--child", case, "--data", data], env=env,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{case} on {data} failed:\n{out.stderr[-3000:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"rows": runs[0]["rows"], "seconds": min(r["seconds"] for r in runs),
            "peak_mb": max(r["peak_mb"] for r in runs), "base_mb": min(r["base_mb"] for r in runs),
            "all_seconds": [round(r["seconds"], 2) for r in runs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    ap.add_argument("--images", default="10000,100000", help="the two dataset sizes in images (24 caption rows each)")
    ap.add_argument("--before-images", default="1000,10000",
                    help=f"the two sizes for the cases that hold every row in memory ({', '.join(IN_MEMORY)})")
    ap.add_argument("--shards", default="1000,10000", help="the two shard counts for preflight")
    ap.add_argument("--repeats", type=int, default=2, help="fresh processes per case and size (fastest time is kept)")
    ap.add_argument("--workdir", default=None, help="where the synthetic data goes (kept and reused if given)")
    ap.add_argument("--out", default=None, help="also write the Markdown table to this file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.data)
        return
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        ap.error(f"--cases: unknown {unknown}; choose from {', '.join(CASES)}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="lverb-scale-")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    server, s3_dir = None, ""
    if any(c.startswith("preflight-s3") for c in cases):
        from tests.s3server import start_seaweedfs

        os.makedirs(workdir, exist_ok=True)
        s3_dir = tempfile.mkdtemp(dir=workdir, prefix="seaweedfs-")   # a fresh server and its shards each time
        server = start_seaweedfs(s3_dir)
        os.environ.update(server.env())
        env.update(server.env())
    results = []
    try:
        for case in cases:
            sizes = args.shards if case.startswith("preflight") else args.before_images if case in IN_MEMORY else args.images
            for size in sizes.split(","):
                size = int(size)
                if case.startswith("preflight"):
                    where = "s3" if case.startswith("preflight-s3") else "local"
                    data = os.path.join(s3_dir if where == "s3" else workdir, f"shards-{where}-{size}")
                    os.makedirs(data, exist_ok=True)
                    prepare_shards(data, size, "s3://lverb-scale" if where == "s3" else None)
                else:
                    data = os.path.join(workdir, f"rows-{size}")
                    os.makedirs(data, exist_ok=True)
                    prepare_rows(data, size)
                r = measure(case, data, args.repeats, env)
                r.update(case=case, size=size)
                results.append(r)
                print(f"  {case:20s} {size:>8,}: {r['rows']:>10,} rows {r['seconds']:8.2f} s (runs {r['all_seconds']}) "
                      f"peak {r['peak_mb']:7.0f} MB (before the work {r['base_mb']:.0f} MB)", flush=True)
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(s3_dir, ignore_errors=True)
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    table = markdown(results, args.repeats)
    print(table)
    if args.out:
        Path(args.out).write_text(table)


def markdown(results: list[dict], repeats: int) -> str:
    lines = [f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; fastest of {repeats} "
             "fresh processes per row; peak = the process's resident high-water mark (imports included); before the work = "
             "resident memory after the imports and the case's starting data", "",
             "| case | rows | seconds | peak MB | before the work MB | rows x | time x | peak x |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    by_case: dict[str, list[dict]] = {}
    for r in results:
        by_case.setdefault(r["case"], []).append(r)
    for case, rs in by_case.items():
        for i, r in enumerate(rs):
            growth = ""
            if i:
                a = rs[0]
                growth = (f" {r['rows'] / a['rows']:.1f} | {r['seconds'] / max(a['seconds'], 1e-9):.1f} | "
                          f"{r['peak_mb'] / a['peak_mb']:.2f} |")
            lines.append(f"| {case} | {r['rows']:,} | {r['seconds']:.2f} | {r['peak_mb']:.0f} | {r['base_mb']:.0f} |"
                         + (growth or " | | |"))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
