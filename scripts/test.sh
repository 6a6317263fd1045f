#!/usr/bin/env bash
# The test command: every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo nextest run --workspace --all-features --no-fail-fast
