#!/usr/bin/env bash
# Run the exactness tests on the LOWEST versions pyproject.toml allows of the libraries the
# captions and labels depend on (transformers, open_clip_torch, kfp, kfp-kubernetes), so a
# declared floor is one that is tested, not hoped for. The floors (and whatever else they need
# in another version, e.g. tokenizers, huggingface-hub) are installed from PyPI into a
# temporary folder put in front of the environment's own packages; the environment is left
# as it is. Needs PyPI. Measured: 2.5 CPU-minutes; 7-10 minutes of wall time on a 2-core
# machine that other jobs share.
#
#   scripts/check_floors.sh                  # the floors pyproject.toml declares
#   scripts/check_floors.sh transformers==5.0.0   # or any other set of versions
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
work=$(mktemp -d "${TMPDIR:-/tmp}/lverb-floors.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [ "$#" -gt 0 ]; then
    floors=("$@")
else
    # The lowest release each declared specifier admits (>=X: X; ==X.*: X.0).
    mapfile -t floors < <("$PY" - <<'EOF_PY'
import tomllib

from packaging.requirements import Requirement

CHECKED = ("transformers", "open_clip_torch", "kfp", "kfp-kubernetes")
for line in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    req = Requirement(line)
    if req.name not in CHECKED:
        continue
    lows = [s.version.removesuffix(".*") + (".0" if s.version.endswith(".*") else "")
            for s in req.specifier if s.operator in (">=", "==", "~=")]
    if len(lows) != 1:
        raise SystemExit(f"pyproject.toml: {line!r} has no single lower bound to test")
    print(f"{req.name}=={lows[0]}")
EOF_PY
)
fi
echo "floors: ${floors[*]}" >&2

# What those versions need that the environment does not already satisfy (pip's own resolver,
# nothing installed), then exactly that, without dependencies, into the temporary folder.
"$PY" -m pip install --quiet --dry-run --report "$work/plan.json" "${floors[@]}" 2> >(grep -v "^WARNING: Location" >&2)
"$PY" -c "import json, sys; [print(f\"{i['metadata']['name']}=={i['metadata']['version']}\") for i in json.load(open(sys.argv[1]))['install']]" \
    "$work/plan.json" > "$work/pins.txt"
echo "installed in front of the environment: $(tr '\n' ' ' < "$work/pins.txt")" >&2
"$PY" -m pip install --quiet --no-deps --target "$work/site" -r "$work/pins.txt" 2> >(grep -v "^WARNING: Location" >&2)

export PYTHONPATH="$work/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Refuse to pass on the environment's own versions: each floor must be the one imported.
"$PY" - "${floors[@]}" <<'EOF_PY'
import sys
from importlib.metadata import version

from packaging.version import Version

for pin in sys.argv[1:]:
    name, _, wanted = pin.partition("==")
    assert Version(version(name)) == Version(wanted), f"{name} {version(name)} imported, {wanted} wanted"
import transformers
assert transformers.__version__ == version("transformers")
print("testing on:", ", ".join(f"{p.partition('==')[0]} {version(p.partition('==')[0])}" for p in sys.argv[1:]),
      file=sys.stderr)
EOF_PY
# The exactness tests of the Hugging Face families (captions: cached decode = the model's own
# generate and the no-cache reference loop) and of categorize (prefix-cached batches = HF
# generate); open_clip's CoCa decoder only when its floor differs from the installed one.
tests=(
    components/caption/tests/test_hf_families.py
    components/common/tests/test_model_families.py
    components/common/tests/test_hf_cache_kwarg.py
    components/categorize/tests/test_generate.py
)
if grep -q "^open[-_]clip[-_]torch==" "$work/pins.txt"; then tests+=(components/caption/tests/test_decoder.py); fi
"$PY" -m pytest -q -p no:cacheprovider "${tests[@]}"
