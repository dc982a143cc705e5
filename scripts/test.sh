#!/usr/bin/env bash
# The whole test suite, as CI runs it on a fresh clone: install what is missing, then
# formatting, lints, the fuzz target's build, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== fuzz targets compile"
cargo check --quiet --manifest-path fuzz/Cargo.toml
echo "== cargo test"
cargo test --workspace
