"""Benchmark of the extract step: images/s and MB/s of features written, ours vs the
original study's style (fp32, forward hooks copying every block's output to pageable host
memory, synchronous writes), random coca_ViT-L-14 weights, in one run.

Ours writes float16 to each destination in turn -- a RAM-backed folder (/dev/shm), local
disk, and S3 (a SeaweedFS server started on 127.0.0.1, when the ``weed`` binary of the
test extras is installed) -- and the same run measures what bounds each: the model's
compute alone, the device-to-host copy into pinned memory, and the destination's own
write bandwidth with as many streams as we use. Peak host memory is measured for two
shard sizes in child processes: it must not grow with the shard.

    python benchmarks/extract.py            # CUDA GPU (H100/H200), coca_ViT-L-14
    python benchmarks/extract.py --small    # CPU smoke run: tiny-random-coca (numbers mean nothing)

Prints a Markdown report (``--results FILE`` also appends it to FILE).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from markdown_results import publish  # noqa: E402  (benchmarks/, beside this script)

from latent_verbalizer.components.common import storage  # noqa: E402
from latent_verbalizer.components.common.model_families.coca_loading import load_coca  # noqa: E402
from latent_verbalizer.components.common.tar_samples import iter_samples  # noqa: E402
from latent_verbalizer.components.extract.extract import ExtractSettings, decode_threads, extract_shard  # noqa: E402
from latent_verbalizer.components.extract.image_decoding import decode_image  # noqa: E402
from tests.images import write_tar  # noqa: E402


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def make_shard(path: str, n: int, size=(640, 480)) -> str:
    """COCO-sized JPEGs: smooth gradients plus noise (realistic decode cost and file size)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    members = []
    for i in range(n):
        base = (np.stack([xx * (i % 7 + 1), yy * (i % 5 + 1), xx + yy], -1) % 256).astype(np.float32)
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        members.append((f"img{i:06d}.jpg", buf.getvalue()))
    return write_tar(path, members)


def reference_style(loaded, shard: str, out_dir: str, device: str, batch: int) -> tuple[float, int]:
    """fp32, hooks on all blocks copying to (pageable) host memory, synchronous safetensors writes."""
    import safetensors.torch

    model = loaded.model.to(device)
    captured = []
    hooks = [b.register_forward_hook(lambda m, i, o: captured.append(o.detach().float().cpu()))
             for b in model.visual.transformer.resblocks]
    os.makedirs(out_dir, exist_ok=True)
    n, nbytes, chunk = 0, 0, 0
    pixels = []

    def flush():
        nonlocal nbytes, chunk
        captured.clear()
        with torch.no_grad():
            model.visual(torch.stack(pixels).to(device))
        tensors = {f"layer_{i}": t.contiguous() for i, t in enumerate(captured)}
        path = os.path.join(out_dir, f"chunk-{chunk:05d}.safetensors")
        safetensors.torch.save_file(tensors, path)
        nbytes += os.path.getsize(path)
        chunk += 1
        pixels.clear()

    sync()
    t = time.perf_counter()
    for s in iter_samples(shard, []):
        pixels.append(loaded.preprocess(decode_image(s.image_bytes()[1])))
        n += 1
        if len(pixels) == batch:
            flush()
    if pixels:
        flush()
    sync()
    for h in hooks:
        h.remove()
    return time.perf_counter() - t, nbytes


def feature_fidelity(loaded, shard: str, shard_dir: str, device: str) -> dict:
    """How far our stored features are from an fp32 forward of the same images, per layer."""
    from latent_verbalizer.components.common.features import iter_feature_chunks

    chunk = next(iter(iter_feature_chunks(shard_dir)))
    keys = set(chunk.image_keys)
    pixels = torch.stack([loaded.preprocess(decode_image(s.image_bytes()[1]))
                          for s in iter_samples(shard, []) if s.key in keys]).to(device)
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o.detach().float()))
             for b in loaded.model.visual.transformer.resblocks]
    with torch.no_grad():
        loaded.model.visual(pixels.float())
    for h in hooks:
        h.remove()
    errors = {layer: float((chunk.layers[layer].to(device).float() - outs[layer]).norm() / outs[layer].norm())
              for layer in chunk.layers}
    worst = max(errors, key=errors.get)
    return {"worst": errors[worst], "worst_layer": worst, "median": float(np.median(list(errors.values())))}


def compute_only(loaded, device: str, batch: int, dtype: torch.dtype, repeats: int = 5) -> float:
    """Images/s of the vision forward alone (no copies, no writes)."""
    model = loaded.model.to(device)
    x = torch.randn(batch, 3, *model.visual.image_size, device=device)
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=device == "cuda"):
        model.visual(x)
        sync()
        t = time.perf_counter()
        for _ in range(repeats):
            model.visual(x)
        sync()
    return batch * repeats / (time.perf_counter() - t)


def decode_rate(loaded, shard: str, threads: int) -> float:
    """Images/s of reading, decoding and preprocessing the shard with our thread pool (no model)."""
    from concurrent.futures import ThreadPoolExecutor

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        n = sum(1 for _ in pool.map(lambda s: loaded.preprocess(decode_image(s.image_bytes()[1])), iter_samples(shard, [])))
    return n / (time.perf_counter() - t)


def d2h_gbps(device: str, nbytes: int = 1 << 30) -> float:
    if device != "cuda":
        return float("nan")
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dst.copy_(src, non_blocking=True)
    sync()
    t = time.perf_counter()
    for _ in range(5):
        dst.copy_(src, non_blocking=True)
    sync()
    return 5 * nbytes / (time.perf_counter() - t) / 1e9


def write_gbps(dest: str, streams: int, nbytes_each: int = 256 << 20) -> float:
    """The destination's own bandwidth with ``streams`` concurrent object writes."""
    from concurrent.futures import ThreadPoolExecutor

    payload = np.random.default_rng(0).integers(0, 255, nbytes_each, dtype=np.uint8).tobytes()

    def one(i):
        with storage.open_write(storage.join(dest, f"bw-{i}.bin")) as f:
            for off in range(0, len(payload), 16 << 20):
                f.write(payload[off:off + (16 << 20)])

    t = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(one, range(streams * 2)))
    secs = time.perf_counter() - t
    for i in range(streams * 2):
        storage.delete(storage.join(dest, f"bw-{i}.bin"))
    return streams * 2 * nbytes_each / secs / 1e9


def child_peak_rss(shard: str, out: str, model: str, device: str, batch: str) -> dict:
    """Run our extract in a child process; returns its images/s and peak RSS (MB)."""
    code = (
        "import json,resource,sys,time;sys.path.insert(0,%r);"
        "from latent_verbalizer.components.common.model_families.coca_loading import load_coca;"
        "from latent_verbalizer.components.extract.extract import ExtractSettings,extract_shard;"
        "s=ExtractSettings(model=%r,pretrained='random',dtype='float16',batch_size=%r,device=%r);"
        "l=load_coca(s.model,s.pretrained,device=%r);t=time.perf_counter();"
        "m=extract_shard(%r,%r,l,s,%r);print(json.dumps({'images':m.image_count,'seconds':time.perf_counter()-t,"
        "'peak_rss_mb':resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024}))"
    ) % (str(REPO), model, batch, device, device, shard, out, device)
    out_text = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out_text.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="CPU smoke run with tiny-random-coca (numbers mean nothing)")
    ap.add_argument("--images", type=int, default=None, help="images per shard (default 2048, small 64)")
    ap.add_argument("--reference-images", type=int, default=None, help="images for the reference style (default 256, small 32)")
    ap.add_argument("--disk", default=None, help="a folder on local disk (default: a temp folder)")
    ap.add_argument("--quick", action="store_true", help="GPU run sized for benchmarks/gpu_check.sh's time budget "
                    "(1024 images, 128 for the reference style, no peak-memory child processes)")
    ap.add_argument("--results", default=None, help="append the Markdown report to this file")
    args = ap.parse_args()
    if args.quick:
        args.images, args.reference_images = args.images or 1024, args.reference_images or 128

    device = "cpu" if args.small or not torch.cuda.is_available() else "cuda"
    if not args.small and device == "cpu":
        sys.exit("no CUDA GPU: run on a GPU machine, or pass --small for a CPU smoke run")
    model_name = "tiny-random-coca" if args.small else "coca_ViT-L-14"
    n = args.images or (64 if args.small else 2048)
    n_ref = args.reference_images or (32 if args.small else 256)
    batch = "16" if args.small else "auto"
    work = tempfile.mkdtemp(prefix="lverb-bench-", dir=args.disk)
    shm = tempfile.mkdtemp(prefix="lverb-bench-", dir="/dev/shm") if os.path.isdir("/dev/shm") else work
    loaded = load_coca(model_name, "random", device=device)
    tokens, width = loaded.model.visual.positional_embedding.shape[0], loaded.model.visual.transformer.width
    per_image_fp16 = loaded.n_layers * tokens * width * 2
    room = min(shutil.disk_usage(shm).free, shutil.disk_usage(work).free)
    if n * per_image_fp16 > 0.7 * room:  # the features of one destination at a time must fit (/dev/shm may be small)
        fit = max(64, int(0.7 * room // per_image_fp16))
        print(f"only {room / 1e9:.1f} GB free for features: {fit} images instead of {n}")
        n, n_ref = fit, min(n_ref, max(16, fit // 8))
    shard = make_shard(os.path.join(work, "bench-000000.tar"), n)
    ref_shard = make_shard(os.path.join(work, "ref-000000.tar"), n_ref)

    rows = []
    ref_s, ref_bytes = reference_style(load_coca(model_name, "random"), ref_shard, os.path.join(shm, "ref"),
                                       device, 16 if args.small else 64)
    ref_rate = n_ref / ref_s
    shutil.rmtree(os.path.join(shm, "ref"), ignore_errors=True)
    rows.append(("reference style: fp32, hooks to pageable memory, sync writes -> /dev/shm", ref_rate,
                 ref_bytes / ref_s / 1e6, "1.0x", ""))

    destinations = [("/dev/shm", shm), ("local disk", os.path.join(work, "disk"))]
    server = None
    from tests.s3server import find_weed, start_seaweedfs

    if find_weed():
        server = start_seaweedfs(tempfile.mkdtemp(prefix="lverb-bench-s3-", dir=args.disk))
        os.environ.update(server.env())
        storage._client_for.cache_clear()
        storage.ensure_bucket("s3://bench/x")
        destinations.append(("S3 (SeaweedFS on this machine)", "s3://bench/features"))

    compute = compute_only(loaded, device, 16 if args.small else 256, torch.float16)
    d2h = d2h_gbps(device)
    settings = ExtractSettings(model=model_name, pretrained="random", dtype="float16", batch_size=batch, device=device)
    decode = decode_rate(loaded, shard, decode_threads(settings))
    for label, dest in destinations:
        bw = write_gbps(dest, settings.writers)
        t = time.perf_counter()
        manifest = extract_shard(shard, dest, loaded, settings, device)  # model loaded once, outside the timing
        secs = time.perf_counter() - t
        written = sum(o.bytes for o in manifest.objects)
        rate = manifest.image_count / secs
        bounds = {"image decoding": decode, "compute": compute, "device-to-host copy": d2h * 1e9 / per_image_fp16 if d2h == d2h else float("inf"),
                  "the write": bw * 1e9 / per_image_fp16}
        limit = min(bounds, key=bounds.get)
        rows.append((f"ours: fp16, pinned async copies, background writers -> {label}", rate, written / secs / 1e6,
                     f"{rate / ref_rate:.1f}x",
                     f"bound by {limit} (decode {decode:.0f} img/s with {decode_threads(settings)} threads, "
                     f"compute {compute:.0f} img/s, copy {bounds['device-to-host copy']:.0f} img/s, "
                     f"write {bw:.2f} GB/s = {bounds['the write']:.0f} img/s)"))
        if dest == shm:
            fidelity = feature_fidelity(loaded, shard, os.path.join(shm, "bench-000000"), device)
        if not storage.is_s3(dest):
            shutil.rmtree(os.path.join(dest, "bench-000000"), ignore_errors=True)

    small_n, big_n = (64, 256) if args.small else (512, 2048)
    peaks = []
    for size in () if args.quick else (small_n, big_n):
        s = make_shard(os.path.join(work, f"mem{size}-000000.tar"), size)
        peaks.append((size, child_peak_rss(s, os.path.join(shm, f"mem{size}"), model_name, device, batch)))

    report = [f"### extract benchmark ({'smoke, CPU, tiny-random-coca' if args.small else 'coca_ViT-L-14, random weights'})", "",
              f"- device: {torch.cuda.get_device_name() if device == 'cuda' else 'CPU ' + platform.machine()}; "
              f"torch {torch.__version__}; {n} COCO-sized JPEGs (reference style: {n_ref})",
              f"- features per image: {per_image_fp16 / 1e6:.1f} MB in float16 ({loaded.n_layers} blocks x {tokens} x {width})", "",
              "| run | images/s | MB/s written | vs reference | what bounds it |", "| --- | --- | --- | --- | --- |"]
    report += [f"| {r[0]} | {r[1]:.1f} | {r[2]:.0f} | {r[3]} | {r[4]} |" for r in rows]
    report += ["", "Peak host memory of our extract (child process, /dev/shm destination): " +
               (", ".join(f"{size} images: {p['peak_rss_mb']:.0f} MB ({p['images'] / p['seconds']:.1f} img/s)"
                          for size, p in peaks) or "not measured (--quick)"),
               "", f"Fidelity of the stored float16 features (computed as our path computes them: half precision on a GPU, fp32 on a CPU) to an fp32 forward with hooks, "
               f"first chunk: relative error (Frobenius) per layer, worst {fidelity['worst']:.2e} (layer {fidelity['worst_layer']}), "
               f"median {fidelity['median']:.2e}",
               "", "Target: >= 20x the reference style writing float16 to /dev/shm on one H100/H200.", ""]
    text = "\n".join(report)
    publish(text, args.results)
    if server:
        server.stop()
    shutil.rmtree(work, ignore_errors=True)
    if shm != work:
        shutil.rmtree(shm, ignore_errors=True)


if __name__ == "__main__":
    main()
