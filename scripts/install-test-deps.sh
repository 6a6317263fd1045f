#!/usr/bin/env bash
# Installs what the tests need, from the registries, by package name. Idempotent.
set -euo pipefail
need=()
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest

# --- ire-adapters (docker, process) -------------------------------------------------------
# The docker adapter's tests run containers built locally from these (nothing is pulled):
# static busybox for workloads, tc (iproute2) and nft (nftables) for the network-fault
# helper image, and docker-compose (v1) for the compose test.
need+=(busybox-static iproute2 nftables docker-compose)
# --- end ire-adapters ----------------------------------------------------------------------

# --- ire-net-fault (network faults) ---------------------------------------------------------
# The helper drives tc and ip (iproute2) and nft (nftables); process namespaces are entered
# with util-linux's nsenter; the tests ping from inside targets with busybox.
need+=(iproute2 nftables util-linux busybox-static)
# --- end ire-net-fault ----------------------------------------------------------------------

# --- ire-actors (engine) -------------------------------------------------------------------
# The example out-of-process plugin (examples/plugins/file-marker) is a Python program.
command -v python3 >/dev/null 2>&1 || need+=(python3)
# --- end ire-actors (engine) ---------------------------------------------------------------

# Only packages that are not installed yet: a machine that has them needs no network.
missing=()
for pkg in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
need=("${missing[@]+"${missing[@]}"}")

if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi

# --- ire-adapters: build the test images (skips images whose inputs did not change) -------
"$(dirname "$0")/../deploy/test-images/build.sh"
# --- end ire-adapters ----------------------------------------------------------------------
