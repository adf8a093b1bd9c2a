#!/usr/bin/env bash
# Prepare benchmarks/gpu_check.sh for a GPU machine that has no internet: download here, into
# .gpu-carry/ (ignored by git), the wheels of what the machine's Python lacks (x86_64, CPython
# 3.12, the versions of this venv), the offline model files and the study's reference captions.
# Then send .gpu-carry/ along with the repository and run benchmarks/gpu_check.sh there.
#
#   benchmarks/gpu_prepare.sh            # PYTHON_VERSION=3.12 by default
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
CARRY=.gpu-carry
# What the GPU image (PyTorch, transformers, timm, scikit-image, pytest, ...) lacks: our
# dependencies on the GPU test and benchmark paths, and theirs (device/KINDS.md lists the image's).
PACKAGES=(open_clip_torch ftfy wcwidth webdataset braceexpand boto3 botocore s3transfer jmespath
          xgrammar apache-tvm-ffi pydantic pydantic-core annotated-types typing-inspection
          # kfp: the entry-point phase runs the KFP components and `lverb run --local` (kfp.local)
          kfp kfp-kubernetes kfp-pipeline-spec kfp-server-api click-option-group docstring-parser
          google-api-core google-auth google-cloud-storage google-cloud-core google-crc32c google-resumable-media
          googleapis-common-protos proto-plus pyasn1 pyasn1-modules rsa cachetools cryptography cffi pycparser
          kubernetes oauthlib requests-oauthlib requests-toolbelt websocket-client docker requests urllib3)

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx "/$CARRY/" "$exclude" 2>/dev/null || echo "/$CARRY/" >>"$exclude"
rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" "$CARRY/offline" "$CARRY/reference"

pins=()
for name in "${PACKAGES[@]}"; do
  version=$("$PY" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
  [ -n "$version" ] || { echo "gpu_prepare: $name is not installed in $PY's environment; run scripts/setup.sh first" >&2; exit 1; }
  pins+=("$name==$version")
done
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "$tag")
done
echo "gpu_prepare: downloading ${#pins[@]} wheels for CPython $PYTHON_VERSION x86_64"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
  "${platforms[@]}" -d "$CARRY/wheels" "${pins[@]}"

offline=$("$PY" -c "from latent_verbalizer.components.common.offline_models import offline_dir; print(offline_dir())")
cp -r "$offline/llama3-tokenizer" "$CARRY/offline/"
reference=${LVERB_REFERENCE_DIR:-../shared/reference}
cp -r "$reference/caps_batch0.json" "$reference/llama70b_labels" "$CARRY/reference/"
du -sh "$CARRY"
echo "gpu_prepare: ready; on the GPU machine run: benchmarks/gpu_check.sh"
