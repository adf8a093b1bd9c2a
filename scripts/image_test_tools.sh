#!/usr/bin/env bash
# The tools `make image-test` needs on this machine: Docker (the CLI, and dockerd unless an engine
# already answers) and mmdebstrap (it makes the stand-in base image, since no image can be pulled).
# Names what is missing and how to install it, instead of letting every image test skip.
set -euo pipefail
missing=()
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
if ! command -v dockerd >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
    [ "${#missing[@]}" -gt 0 ] || missing+=(docker.io)
fi
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "make image-test needs ${missing[*]}: on Debian or Ubuntu, as root, apt-get install -y ${missing[*]}" \
        "(.ci/run installs them)" >&2
    exit 1
fi
