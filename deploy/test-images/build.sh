#!/usr/bin/env bash
# Builds ire's local container images without pulling anything:
#   ire/test-busybox:latest  static busybox FROM scratch (test workloads)
#   ire/net-fault:latest       ire's network-fault helper (ire-net-fault, built here with cargo),
#                            iproute2's `tc` and `ip` and nftables' `nft` with their shared
#                            libraries (the docker and kubernetes adapters' network faults)
# Needs: docker, cargo, and Debian's busybox-static (/bin/busybox), iproute2 (/usr/sbin/tc,
# /usr/sbin/ip) and nftables (/usr/sbin/nft).
# IRE_NET_FAULT_PROFILE=release builds the helper optimised (for benchmarks; the default, dev,
# shares the test build's artifacts); NET_FAULT_BIN uses a helper binary built elsewhere.
# Idempotent: an image is rebuilt only when its inputs changed (a hash of them is stored in
# the image's `ire.inputs` label).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

BUSYBOX_IMAGE="${IRE_TEST_BUSYBOX_IMAGE:-ire/test-busybox:latest}"
NET_FAULT_IMAGE="${IRE_NET_FAULT_IMAGE:-ire/net-fault:latest}"
BUSYBOX_BIN="${BUSYBOX_BIN:-/bin/busybox}"
TC_BIN="${TC_BIN:-/usr/sbin/tc}"
NFT_BIN="${NFT_BIN:-/usr/sbin/nft}"
IP_BIN="${IP_BIN:-/usr/sbin/ip}"

die() { echo "build.sh: $*" >&2; exit 1; }
command -v docker >/dev/null || die "docker is not installed"
[ -x "$BUSYBOX_BIN" ] || die "$BUSYBOX_BIN missing: apt-get install busybox-static"
file_is_static() { ! ldd "$1" >/dev/null 2>&1; }
file_is_static "$BUSYBOX_BIN" || die "$BUSYBOX_BIN is dynamically linked: install busybox-static"
[ -x "$TC_BIN" ] || die "$TC_BIN missing: apt-get install iproute2"
[ -x "$NFT_BIN" ] || die "$NFT_BIN missing: apt-get install nftables"
[ -x "$IP_BIN" ] || die "$IP_BIN missing: apt-get install iproute2"

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

# network-fault helper: ire-net-fault, tc, ip and nft, every library ldd lists for them (with
# the loader), and tc's delay distribution tables.
if [ -z "${NET_FAULT_BIN:-}" ]; then
  command -v cargo >/dev/null || die "cargo is needed to build ire-net-fault (or set NET_FAULT_BIN)"
  repo="$(cd "$here/../.." && pwd)"
  profile="${IRE_NET_FAULT_PROFILE:-dev}"
  case "$profile" in
    dev) flags=(); dir=debug ;;
    release) flags=(--release); dir=release ;;
    *) die "IRE_NET_FAULT_PROFILE must be dev or release" ;;
  esac
  (cd "$repo" && cargo build -q -p ire-net-fault --bin ire-net-fault "${flags[@]}")
  NET_FAULT_BIN="${CARGO_TARGET_DIR:-$repo/target}/$dir/ire-net-fault"
fi
[ -x "$NET_FAULT_BIN" ] || die "$NET_FAULT_BIN is not an executable"
root="$work/net-fault/rootfs"
mkdir -p "$root/sbin" "$root/bin" "$root/tmp" "$root/run" "$root/usr/local/bin" "$root/dev"
cp "$here/net-fault/Dockerfile" "$work/net-fault/"
cp "$BUSYBOX_BIN" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
copy_with_libs() { # copy_with_libs BIN DEST_DIR
  cp "$1" "$root$2/$(basename "$1")"
  ldd "$1" | grep -o '/[^ ]*' | sort -u | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}
for bin in "$TC_BIN" "$NFT_BIN" "$IP_BIN"; do
  copy_with_libs "$bin" /sbin
done
copy_with_libs "$NET_FAULT_BIN" /usr/local/bin
if [ -d /usr/lib/tc ]; then
  mkdir -p "$root/usr/lib"
  cp -r /usr/lib/tc "$root/usr/lib/tc"
fi
build "$NET_FAULT_IMAGE" "$work/net-fault"
