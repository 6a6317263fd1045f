#!/usr/bin/env bash
# Line coverage of the core and the runtime (ire-core, ire-actors), with cargo-tarpaulin.
# Uses tarpaulin's LLVM engine, which needs no llvm-tools component. The test-support code
# (core's `testsuite` module: fakes and conformance suites) is left out of the figure.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-tarpaulin >/dev/null 2>&1 || cargo install --locked cargo-tarpaulin
cargo tarpaulin --engine llvm --skip-clean --target-dir target/coverage \
  -p ire-core -p ire-actors --all-features --exclude-files 'core/src/testsuite/*' \
  --out Stdout "$@"
