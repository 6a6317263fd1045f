#!/usr/bin/env bash
# The test command: every test of the workspace, then the doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo nextest run --workspace --all-features --no-fail-fast
cargo test --workspace --all-features --doc
