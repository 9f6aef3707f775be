#!/usr/bin/env bash
# A Debian bookworm base image with Python 3.11, built from Debian's packages (debootstrap) for
# machines that reach a Debian mirror but no image registry. Equivalent, for the Dockerfile, to
# python:3.11-slim-bookworm (python3 + venv + CA certificates). Cached: skipped if the image exists.
#   deploy/image/base.sh [IMAGE]        (root; needs debootstrap and a running Docker engine)
set -euo pipefail
IMAGE=${1:-tweet-sentiment-base:bookworm}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base: $IMAGE exists (cached)"
    exit 0
fi
# The mirror apt already uses here (deb822 sources first, then the one-line format).
MIRROR=${MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)}
MIRROR=${MIRROR:-$(sed -n 's/^deb \(http[^ ]*\/debian\) bookworm .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ROOTFS=$(mktemp -d /tmp/tweet-sentiment-base.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
start=$(date +%s)
echo "base: debootstrap bookworm from $MIRROR"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || { tail -n 30 "$ROOTFS.log" >&2; exit 1; }
rm -f "$ROOTFS.log"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/*
# An imported tarball has no config: give it the PATH and locale the official image sets.
tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$IMAGE" >/dev/null
echo "base: $IMAGE built in $(($(date +%s) - start)) s"
