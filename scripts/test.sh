#!/usr/bin/env bash
# The whole test suite from a fresh clone: bootstrap (idempotent), formatting, lints, tests.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$JEREX_ROOT"
scripts/bootstrap.sh --no-build
cargo fmt --check
cargo clippy --quiet --all-targets -- -D warnings
cargo test --all-targets 2>&1
