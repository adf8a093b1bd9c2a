#!/usr/bin/env bash
# Build (and optionally push) the image every pipeline step runs in.
#
#   docker/build.sh REGISTRY TAG
#
# builds REGISTRY/latent-verbalizer:TAG from docker/Dockerfile with the repository root
# as context; `lverb compile --image-registry REGISTRY --image-tag TAG` then points the
# pipeline at it. Environment:
#   PUSH=1            push the image after building it
#   DOCKER=podman     another OCI builder with docker's CLI (default: docker)
#   PLATFORM=...      target platform (default: linux/amd64, what GPU nodes run)
#   BASE_IMAGE=...    another CUDA PyTorch base (default: the pinned one in the Dockerfile)
#   OFFLINE_MODELS=0  leave the ~100 MB of offline demo models out of the image
#   IMAGE_NAME=...    repository name under REGISTRY (default: latent-verbalizer)
#   BUILD_NETWORK=... network of the build's RUN steps, e.g. host (pip then reaches what
#                     this host reaches: docker/README.md, "Building where nothing can be pulled")
#   DOCKER_BUILDKIT=0 the classic builder (default 1, BuildKit; 0 where buildx is missing)
set -euo pipefail

usage() {
    echo "usage: $0 REGISTRY TAG   (e.g. $0 ghcr.io/acme v0.1.0; PUSH=1 to push)" >&2
    exit 2
}
[ "$#" -eq 2 ] || usage
registry=${1%/}
tag=$2
[ -n "$registry" ] && [ -n "$tag" ] || usage
if [ "$tag" = latest ]; then
    echo "$0: refusing tag 'latest': the compiled pipeline must point at a fixed tag" >&2
    exit 2
fi
if ! [[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
    echo "$0: '$tag' is not a valid image tag" >&2
    exit 2
fi

docker=${DOCKER:-docker}
if ! command -v "$docker" >/dev/null 2>&1; then
    echo "$0: '$docker' not found: install Docker (or set DOCKER=podman)" >&2
    exit 1
fi

root=$(cd "$(dirname "$0")/.." && pwd)
image="$registry/${IMAGE_NAME:-latent-verbalizer}:$tag"
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/pyproject.toml" | head -n 1)

args=(build
    --file "$root/docker/Dockerfile"
    --platform "${PLATFORM:-linux/amd64}"
    --tag "$image"
    --label "org.opencontainers.image.revision=$revision"
    --label "org.opencontainers.image.version=$version"
    --build-arg "OFFLINE_MODELS=${OFFLINE_MODELS:-1}")
if [ -n "${BASE_IMAGE:-}" ]; then
    args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi
if [ -n "${BUILD_NETWORK:-}" ]; then
    args+=(--network "$BUILD_NETWORK")
fi

echo "building $image (revision $revision)" >&2
DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-1} "$docker" "${args[@]}" "$root"

if [ "${PUSH:-0}" = 1 ]; then
    "$docker" push "$image"
fi
echo "$image"
