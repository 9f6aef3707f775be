#!/usr/bin/env bash
# `make image-test`: build the image offline and check it running (deploy/image/check.py).
#   deploy/image/test.sh PYTHON BUNDLES     (root: apt-get, dockerd, debootstrap)
# Installs docker.io/debootstrap if absent, starts dockerd (no bridge, no iptables: containers run
# on --network host only) unless one answers, downloads the wheelhouse on the host, builds the
# Debian base (cached) and the image on it with the legacy builder, runs the checks, reports the
# image size, and removes everything it started or built except the cached base image.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${1:?usage: deploy/image/test.sh PYTHON BUNDLES}
BUNDLES=${2:?usage: deploy/image/test.sh PYTHON BUNDLES}
BASE=tweet-sentiment-base:bookworm
IMAGE=tweet-sentiment:image-test
say() { echo "image-test: $*"; }

if [ "$(id -u)" -ne 0 ]; then
    say "needs root (apt-get, dockerd, debootstrap): not run" >&2
    exit 1
fi
if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null || ! command -v debootstrap >/dev/null; then
    command -v apt-get >/dev/null || { say "no apt-get to install docker.io/debootstrap: not run" >&2; exit 1; }
    say "installing docker.io debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi

WORK=$(mktemp -d /tmp/image-test.XXXXXX)
DOCKERD_PID=""
cleanup() {
    docker rmi -f "$IMAGE" >/dev/null 2>&1 || true
    # The builder stage's layers, left untagged by the legacy builder.
    for id in $(docker images -q -f dangling=true 2>/dev/null); do
        grep -qx "$id" "$WORK/dangling" 2>/dev/null || docker rmi "$id" >/dev/null 2>&1 || true
    done
    if [ -n "$DOCKERD_PID" ]; then
        kill "$DOCKERD_PID" 2>/dev/null || true
        for _ in $(seq 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
        say "stopped the dockerd it started"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
    dockerd --bridge=none --iptables=false >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { tail -n 20 "$WORK/dockerd.log" >&2; say "dockerd did not start" >&2; exit 1; }
    say "started dockerd (pid $DOCKERD_PID)"
fi
docker images -q -f dangling=true >"$WORK/dangling"

t0=$(date +%s)
deploy/image/wheels.sh "$PYTHON" wheels
deploy/image/base.sh "$BASE"
t1=$(date +%s)
DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" \
    --build-arg PYTHON_IMAGE="$BASE" \
    --build-arg BUNDLES="$BUNDLES" \
    --build-arg VERSION="$(sed -n 's/^version = //p' setup.cfg)" \
    --build-arg REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" . 2>"$WORK/build.log" >/dev/null \
    || { cat "$WORK/build.log" >&2; say "docker build failed" >&2; exit 1; }
t2=$(date +%s)
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
say "image built in $((t2 - t1)) s (wheels + base $((t1 - t0)) s): $((size / 1000000)) MB"
default=${BUNDLES%%,*}
PYTHONPATH=$PWD "$PYTHON" deploy/image/check.py "$IMAGE" --bundle "${default#/app/}" \
    || { say "FAILED" >&2; exit 1; }
say "passed ($((size / 1000000)) MB image, $(($(date +%s) - t0)) s)"
