#!/usr/bin/env bash
# Builds ire's local container images without pulling anything:
#   ire/test-busybox:latest  static busybox FROM scratch (test workloads)
#   ire/net-fault:latest       iproute2's `tc` and nftables' `nft` with their shared libraries
#                            (the docker adapter's network-fault helper)
# Needs: docker, and Debian's busybox-static (/bin/busybox), iproute2 (/usr/sbin/tc) and
# nftables (/usr/sbin/nft).
# Idempotent: an image is rebuilt only when its inputs changed (a hash of them is stored in
# the image's `ire.inputs` label).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

BUSYBOX_IMAGE="${IRE_TEST_BUSYBOX_IMAGE:-ire/test-busybox:latest}"
NET_FAULT_IMAGE="${IRE_NET_FAULT_IMAGE:-ire/net-fault:latest}"
BUSYBOX_BIN="${BUSYBOX_BIN:-/bin/busybox}"
TC_BIN="${TC_BIN:-/usr/sbin/tc}"
NFT_BIN="${NFT_BIN:-/usr/sbin/nft}"

die() { echo "build.sh: $*" >&2; exit 1; }
command -v docker >/dev/null || die "docker is not installed"
[ -x "$BUSYBOX_BIN" ] || die "$BUSYBOX_BIN missing: apt-get install busybox-static"
file_is_static() { ! ldd "$1" >/dev/null 2>&1; }
file_is_static "$BUSYBOX_BIN" || die "$BUSYBOX_BIN is dynamically linked: install busybox-static"
[ -x "$TC_BIN" ] || die "$TC_BIN missing: apt-get install iproute2"
[ -x "$NFT_BIN" ] || die "$NFT_BIN missing: apt-get install nftables"

# build IMAGE CONTEXT_DIR: builds unless an image with the same input hash exists.
build() {
  local image="$1" ctx="$2" hash current
  hash="$(cd "$ctx" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
  current="$(docker image inspect -f '{{ index .Config.Labels "ire.inputs" }}' "$image" 2>/dev/null || true)"
  if [ "$current" = "$hash" ]; then
    echo "$image is up to date ($hash)"
    return
  fi
  echo "building $image ($hash)"
  docker build -q --label "ire.inputs=$hash" -t "$image" "$ctx" >/dev/null
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# busybox
mkdir -p "$work/busybox"
cp "$here/busybox/Dockerfile" "$work/busybox/"
cp "$BUSYBOX_BIN" "$work/busybox/busybox"
build "$BUSYBOX_IMAGE" "$work/busybox"

# network-fault helper: tc and nft, every library ldd lists for them (with the loader), and
# tc's delay distribution tables.
root="$work/net-fault/rootfs"
mkdir -p "$root/sbin" "$root/bin" "$root/tmp" "$root/run"
cp "$here/net-fault/Dockerfile" "$work/net-fault/"
cp "$BUSYBOX_BIN" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
for bin in "$TC_BIN" "$NFT_BIN"; do
  cp "$bin" "$root/sbin/$(basename "$bin")"
  ldd "$bin" | grep -o '/[^ ]*' | sort -u | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done
if [ -d /usr/lib/tc ]; then
  mkdir -p "$root/usr/lib"
  cp -r /usr/lib/tc "$root/usr/lib/tc"
fi
build "$NET_FAULT_IMAGE" "$work/net-fault"
