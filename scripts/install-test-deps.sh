#!/usr/bin/env bash
# Installs what the tests need, from the registries, by package name. Idempotent.
set -euo pipefail
need=()
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi
