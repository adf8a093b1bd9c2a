#!/usr/bin/env bash
# One GPU run, one script: the entry points users run (CLIs, KFP components, lverb run --local), the GPU
# test suite (pytest -m gpu) and the benchmarks on one H100/H200, all figures in one Markdown
# file, in under 15 minutes.
#
#   benchmarks/gpu_prepare.sh                 # once, on a machine with internet (fills .gpu-carry/)
#   benchmarks/gpu_check.sh [REPORT.md]       # on the GPU machine, from a copy of the repository
#
# REPORT.md defaults to $OUT/gpu-check.md when OUT is set, else benchmarks/results/gpu-check.md;
# its content goes into benchmarks/RESULTS.md. The machine needs Python with a CUDA build of
# PyTorch (PY, default: python3); what it lacks is installed from .gpu-carry/wheels (no index),
# then this repository itself (--no-deps). Each phase has its own time limit, so one that hangs
# cannot take the others' time; a failed phase is reported and the script goes on, and exits 1.
# Without a visible CUDA GPU it stops at once with exit code 2 and says what it sees.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
REPO=$PWD
PY=${PY:-python3}
CARRY=$REPO/.gpu-carry
REPORT=${1:-${OUT:+$OUT/gpu-check.md}}
REPORT=${REPORT:-$REPO/benchmarks/results/gpu-check.md}
mkdir -p "$(dirname "$REPORT")"
LOGS=$(dirname "$REPORT")
START=$(date +%s)
FAILED=()

step() { printf '[gpu_check %4ss] %s\n' "$(($(date +%s) - START))" "$*"; }

# --- 0. a GPU, or a clear stop ---------------------------------------------------------------
if ! sees=$("$PY" - <<'EOF' 2>&1
import os, sys
try:
    import torch
except ImportError as e:
    sys.exit(f"{sys.executable} has no PyTorch ({e})")
if not torch.cuda.is_available():
    sys.exit(f"no CUDA GPU visible: CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}, "
             f"torch {torch.__version__} built for CUDA {torch.version.cuda or 'none (a CPU-only build)'}, "
             f"device count {torch.cuda.device_count()}")
print(f"{torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB, "
      f"torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
); then
  echo "gpu_check: $sees" >&2
  echo "gpu_check: this script measures the GPU paths; run it on a machine with one H100/H200 (nothing was run)." >&2
  exit 2
fi
step "GPU: $sees"

# --- 1. install what the machine lacks, then the package --------------------------------------
if [ -d "$CARRY/wheels" ]; then
  step "installing $(find "$CARRY/wheels" -name '*.whl' | wc -l) wheels from .gpu-carry/wheels (no index)"
  "$PY" -m pip install -q --no-index --no-deps --no-cache-dir "$CARRY"/wheels/*.whl || { echo "gpu_check: wheel install failed" >&2; exit 1; }
fi
step "installing the package from the repository (--no-deps)"
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir -e "$REPO" \
  || { echo "gpu_check: installing the repository failed" >&2; exit 1; }
missing=$("$PY" -c "
import importlib.util as u
print(' '.join(m for m in ('open_clip', 'xgrammar', 'webdataset', 'boto3', 'safetensors', 'pyarrow', 'transformers',
                           'accelerate', 'skimage', 'pytest', 'pytest_timeout', 'kfp') if u.find_spec(m) is None))")
if [ -n "$missing" ]; then
  echo "gpu_check: missing Python modules: $missing; run benchmarks/gpu_prepare.sh where pip works and send .gpu-carry/ along" >&2
  exit 1
fi
[ -d "$CARRY/offline" ] && export LVERB_OFFLINE_MODELS=$CARRY/offline
[ -d "$CARRY/reference" ] && export LVERB_REFERENCE_DIR=$CARRY/reference
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

{
  echo "## GPU check ($(date -u +%Y-%m-%d), commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo
  echo "- GPU: $sees; $(nproc) CPU cores"
  echo "- \`benchmarks/gpu_check.sh\`: the GPU test suite and the benchmarks in one run; random weights"
  echo
} >"$REPORT"

# phase NAME LIMIT_S COMMAND...: runs with a time limit, log to $LOGS/NAME.log, result into the report
phase() {
  local name=$1 limit=$2
  shift 2
  step "$name (limit ${limit}s)"
  local t0 rc took
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  rc=$?
  took=$(($(date +%s) - t0))
  tail -n 3 "$LOGS/$name.log" | sed "s/^/    /"
  if [ $rc -ne 0 ]; then
    FAILED+=("$name")
    local why="exit code $rc"
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && why="stopped at its ${limit}s limit"
    { echo "**$name FAILED** ($why after ${took}s); last lines of its log:"; echo; echo '```'
      tail -n 25 "$LOGS/$name.log"; echo '```'; echo; } >>"$REPORT"
  fi
  step "$name: $([ $rc -eq 0 ] && echo ok || echo FAILED) in ${took}s"
}

# --- 2. what users run, then the GPU test suite ---------------------------------------------------
# First the entry points (each step's CLI with --device auto, each KFP component as a pipeline GPU step,
# lverb run --local end to end, CoCa ViT-L/14 at the real size through the CLIs): what a user runs.
# CI=true: the root conftest turns any skip into a failure, so no GPU test is skipped silently here.
export LVERB_GPU_REPORT=$LOGS/gpu-tests-figures.md
rm -f "$LVERB_GPU_REPORT"
results() {  # results JUNIT_XML TITLE: the tests' table into the report
  printf '### %s\n\n' "$2" >>"$REPORT"
  "$PY" - "$1" >>"$REPORT" <<'EOF'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    sys.exit(print("(no test results: the run did not finish)\n"))
print("| test | result | seconds |\n| --- | --- | ---: |")
for case in root.iter("testcase"):
    state = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
    print(f"| {case.get('classname', '')}::{case.get('name')} | {state} | {float(case.get('time', 0)):.1f} |")
print()
EOF
}
CI=true phase entry-points 300 "$PY" -m pytest -m gpu -q -p no:cacheprovider --timeout 280 \
  --junitxml "$LOGS/entry-points.xml" tests/test_gpu_entry_points.py
results "$LOGS/entry-points.xml" "Entry points on the GPU (\`tests/test_gpu_entry_points.py\`)"
# The other GPU test files.
mapfile -t gpu_test_files < <(find components tests -name 'test_gpu*.py' ! -name test_gpu_entry_points.py | sort)
CI=true phase gpu-tests 200 "$PY" -m pytest -m gpu -q -p no:cacheprovider --timeout 180 --junitxml "$LOGS/gpu-tests.xml" \
  "${gpu_test_files[@]}"
results "$LOGS/gpu-tests.xml" "GPU test suite (\`pytest -m gpu\`)"
[ -f "$LVERB_GPU_REPORT" ] && cat "$LVERB_GPU_REPORT" >>"$REPORT"

# --- 3. the benchmarks ---------------------------------------------------------------------------
phase bench-extract 95 "$PY" benchmarks/extract.py --quick --results "$REPORT"
phase bench-caption 80 "$PY" benchmarks/caption.py --quick --results "$REPORT"
phase bench-grounding 60 "$PY" benchmarks/grounding.py --quick --rows 256 --results "$REPORT"
phase bench-categorize 95 "$PY" benchmarks/categorize.py --quick --results "$REPORT"
phase bench-families 60 "$PY" benchmarks/families.py --size base --images 16 --results "$REPORT"

total=$(($(date +%s) - START))
{
  echo
  echo "Whole check: ${total}s wall clock (budget 900s)."
  [ ${#FAILED[@]} -eq 0 ] && echo "All phases passed." || echo "Failed phases: ${FAILED[*]}."
} >>"$REPORT"
step "report: $REPORT"
[ ${#FAILED[@]} -eq 0 ]
