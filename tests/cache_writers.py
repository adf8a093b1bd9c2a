"""Writers of the S3 download cache that run as processes of their own (``spawn``), for the
tests of several pods filling one ``$LVERB_MODEL_CACHE`` at once (tests/test_download_cache.py)."""

from __future__ import annotations

import hashlib
import logging
import os
import signal


def download_and_load(prefix: str, start, results) -> None:
    """Wait for every writer to be ready, download ``prefix`` into the cache, load its
    ``model.safetensors`` and put on ``results`` what this process ended with: the file's
    hash, inode and tensors (name -> hash of the bytes), and how many files it downloaded
    itself (from the download log); or the error it raised."""
    from safetensors.numpy import load_file

    from latent_verbalizer.components.common.storage import download_cache

    downloads: list[int] = []

    class Counter(logging.Handler):
        def emit(self, record):
            if record.msg.startswith("%s -> %s ("):
                downloads.append(record.args[3])

    logging.getLogger(download_cache.__name__).addHandler(Counter())
    logging.getLogger(download_cache.__name__).setLevel(logging.INFO)
    start.wait()
    try:
        folder = download_cache.download_prefix(prefix, (".json", ".safetensors"))
        path = os.path.join(folder, "model.safetensors")
        with open(path, "rb") as f:
            file_hash = hashlib.sha256(f.read()).hexdigest()
        tensors = {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in load_file(path).items()}
        results.put({"pid": os.getpid(), "file": file_hash, "inode": os.stat(path).st_ino, "tensors": tensors,
                     "downloaded": sum(downloads)})
    except BaseException as e:
        results.put({"pid": os.getpid(), "error": repr(e)})


def die_while_writing(target: str, partial_bytes: bytes) -> None:
    """A writer killed mid-download: it takes the lock of ``target``, writes part of the
    file to a partial file of its own, and is killed (SIGKILL: no cleanup runs)."""
    import socket

    from latent_verbalizer.components.common.storage.download_cache import CachedFile

    cached = CachedFile.at(target)
    with cached.locked():
        with open(f"{cached.partial_prefix}{socket.gethostname()}-{os.getpid()}-killed", "wb") as f:
            f.write(partial_bytes)
            f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
