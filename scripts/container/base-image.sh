#!/usr/bin/env bash
# Builds an offline stand-in for docker.io/library/python:3.11-slim with debootstrap (Debian
# bookworm's python3 is 3.11), so the project's unchanged `FROM python:3.11-slim` resolves
# locally on a machine that cannot reach a registry. Reuses the image when it is already there.
# Usage: base-image.sh  (with the private podman settings of env.sh in the environment)
set -euo pipefail

IMAGE="${BASE_IMAGE:-docker.io/library/python:3.11-slim}"
SUITE="${BASE_SUITE:-bookworm}"

if podman image exists "$IMAGE"; then
    echo "base image $IMAGE already present: reused"
    exit 0
fi

# The Debian mirror apt already uses on this machine (deb822 or one-line sources).
mirror="${DEBIAN_MIRROR:-}"
if [[ -z "$mirror" ]]; then
    mirror="$(grep -hoE '^URIs: *\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)"
fi
if [[ -z "$mirror" ]]; then
    mirror="$(grep -hoE '^deb +\S+' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1 || true)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

rootfs="$(mktemp -d "${TMPDIR:-/tmp}/rootfs.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT

echo "debootstrap $SUITE from $mirror"
# passwd: useradd/groupadd, present in the real slim image and used by the Dockerfile.
debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates,passwd \
    "$SUITE" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -n 30 "$rootfs.log" >&2
    echo "debootstrap failed (full log: $rootfs.log)" >&2
    exit 1
}
rm -f "$rootfs.log"

# Make it behave like the official image: pip may install into it, `python` exists.
rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

tar --numeric-owner -C "$rootfs" -c . \
    | podman import --quiet \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        - "$IMAGE" >/dev/null
echo "imported $IMAGE ($(podman image inspect --format '{{.Size}}' "$IMAGE") bytes)"
