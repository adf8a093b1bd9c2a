#!/usr/bin/env bash
# Build a local stand-in for the pinned base image (pytorch/pytorch:2.14.1-...-runtime) where
# no image can be pulled: a minimal Debian made with mmdebstrap, Python in /opt/conda with
# torch/torchvision installed by pip the way the official image has them (on PATH as
# /opt/conda/bin/python), then `docker import`.
#
#   docker/stand-in-base.sh [IMAGE]     (default IMAGE: lverb-stand-in-base:torch2.14.1)
#
# The image is then given to the real Dockerfile as --build-arg BASE_IMAGE=IMAGE, so every
# line after FROM is what users build. Needs root, mmdebstrap and a Debian mirror (apt).
#
# The host's package sources travel into the image so that pip inside `docker build`
# reaches what pip on this host reaches (docker/README.md, "Building where nothing can be
# pulled"): the CA certificates under /usr/local/share/ca-certificates (a TLS-intercepting
# egress proxy) and a pip.conf naming the system CA bundle. The host's local wheel folders
# (pip config find-links / file:// indexes) are bind-mounted only while torch installs.
# An existing IMAGE is kept (REBUILD=1 to make it again).
# The mmdebstrap hooks below are single-quoted on purpose: mmdebstrap runs each as
# `sh -c HOOK exec ROOT`, so "$1" is the new root there, not an argument here.
# shellcheck disable=SC2016
set -euo pipefail

image=${1:-lverb-stand-in-base:torch2.14.1}
suite=${SUITE:-bookworm}
torch_version=${TORCH_VERSION:-2.14.1}
torchvision_version=${TORCHVISION_VERSION:-0.29.1}
docker=${DOCKER:-docker}

if [ "${REBUILD:-0}" != 1 ] && "$docker" image inspect "$image" >/dev/null 2>&1; then
    echo "$image exists (REBUILD=1 to make it again)" >&2
    echo "$image"
    exit 0
fi
command -v mmdebstrap >/dev/null || { echo "$0: mmdebstrap missing: apt-get install -y mmdebstrap" >&2; exit 1; }

# Host folders pip reads packages from (its find-links and file:// indexes), mounted read-only
# into the chroot while torch installs; none of them ends up in the image.
mapfile -t local_dirs < <(python3 - <<'EOF_PY'
import os, re, subprocess
out = subprocess.run(["python3", "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
dirs = []
for line in out.splitlines() + [f"env.find-links='{os.environ.get('PIP_FIND_LINKS', '')}'"]:
    key, _, value = line.partition("=")
    option = key.split(".")[-1]
    for item in value.strip("'\"").split():
        path = re.sub(r"^file://", "", item).rstrip("/")
        if not path.startswith("/"):
            continue
        if option in ("index-url", "extra-index-url"):
            path = os.path.dirname(path)  # .../simple links to ../../files: mount the folder holding both
        elif option == "constraint":
            path = os.path.dirname(path)
        elif option != "find-links":
            continue
        if os.path.isdir(path):
            dirs.append(path)
# outermost folders only, so nothing is mounted inside another mount
dirs = sorted(set(dirs))
print("\n".join(d for d in dirs if not any(d != o and d.startswith(o + "/") for o in dirs)))
EOF_PY
)
echo "local package folders bind-mounted for the torch install: ${local_dirs[*]:-none}" >&2

mounts=""
unmounts=""
for d in "${local_dirs[@]}"; do
    mounts+="mkdir -p \"\$1$d\" && mount --bind -o ro \"$d\" \"\$1$d\" && "
    unmounts="umount \"\$1$d\" && rmdir \"\$1$d\"; $unmounts"
done

pip_env="PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1"
[ -n "${PIP_FIND_LINKS:-}" ] && pip_env+=" PIP_FIND_LINKS=$PIP_FIND_LINKS"

# The hooks are run by mmdebstrap as `sh -c HOOK exec ROOT`: "$1" is expanded there, not here.
# mmdebstrap writes the root filesystem as a tar stream straight into `docker import`, under a
# temporary name that becomes IMAGE only when both succeeded (a cut stream is never cached).
partial="$image-partial-$$"
mmdebstrap --variant=minbase --mode=root \
    --include=python3,python3-venv,ca-certificates,passwd,procps \
    --customize-hook='mkdir -p "$1/usr/local/share/ca-certificates" && { cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" 2>/dev/null || true; } && chroot "$1" update-ca-certificates >/dev/null' \
    --customize-hook='printf "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n" > "$1/etc/pip.conf"' \
    --customize-hook='chroot "$1" python3 -m venv /opt/conda' \
    --customize-hook="${mounts}chroot \"\$1\" env $pip_env /opt/conda/bin/python -m pip install -q torch==$torch_version torchvision==$torchvision_version; rc=\$?; ${unmounts}exit \$rc" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/root/.cache' \
    "$suite" - |
"$docker" import \
    --change 'ENV PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV NVIDIA_VISIBLE_DEVICES=all' \
    --change 'ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility' \
    --change 'WORKDIR /workspace' \
    --message "stand-in for pytorch/pytorch:$torch_version runtime (Debian $suite, torch $torch_version, torchvision $torchvision_version)" \
    - "$partial" >/dev/null
"$docker" tag "$partial" "$image"
"$docker" rmi "$partial" >/dev/null
echo "$image"
