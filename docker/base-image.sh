#!/usr/bin/env bash
# A Debian bookworm base image with Python 3.11, built from Debian's own packages, for machines
# where no image registry holds python:3.11-slim-bookworm (make base-image; make images
# BASE_IMAGE=leukemia-mtl-base:bookworm). It trusts the CAs this host adds to Debian's
# (/usr/local/share/ca-certificates), so pip inside reaches PyPI through the same proxy as the host.
# Rerunning reuses the image while this script is unchanged.
set -euo pipefail
TAG="${1:-leukemia-mtl-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
here="$(cd "$(dirname "$0")" && pwd)"
recipe="$(sha256sum "$here/base-image.sh" | cut -c1-16)"
if [ "$(docker image inspect -f '{{index .Config.Labels "org.leukemia-mtl.base-recipe"}}' "$TAG" 2>/dev/null)" = "$recipe" ]; then
    echo "base image $TAG is up to date (recipe $recipe)"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "base-image: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "base-image: debootstrap needs root (sudo make base-image)" >&2; exit 1; }
rootfs="$(mktemp -d /tmp/leukemia-mtl-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm into $rootfs (a few minutes)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$MIRROR" >/dev/null
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null
fi
# nothing of the build's apt state in the image
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL org.leukemia-mtl.base-recipe=$recipe" \
    --change 'CMD ["python3"]' - "$TAG" >/dev/null
echo "built base image $TAG ($(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
