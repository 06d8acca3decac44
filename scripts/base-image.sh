#!/usr/bin/env bash
# A Debian base image made from Debian packages (debootstrap), for building the Dockerfiles where
# no container registry is reachable:
#
#   scripts/base-image.sh        # prints the image: localhost/jerex-debian-base:bookworm
#   podman build --build-arg BASE=localhost/jerex-debian-base:bookworm -t jerex:0.1.0 .
#
# bookworm: the Debian release the archive is built on (its glibc and libstdc++, or newer, are
# what the binary needs). Does nothing when podman already has the image. Needs root, podman
# and debootstrap (apt-get install podman debootstrap).
set -euo pipefail
image=${1:-localhost/jerex-debian-base:bookworm}
if podman image exists "$image"; then
  echo "$image"
  exit 0
fi
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >&2
tar -C "$rootfs" -c . | podman import - "$image" >&2
echo "$image"
