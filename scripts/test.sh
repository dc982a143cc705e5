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
echo "== Windows build (x86_64-pc-windows-gnu)"
./scripts/build-windows.sh
# The Wine tests (dfs-client/tests/wine.rs) run with the rest; the wineserver they start is
# stopped however the run ends.
trap ./scripts/wine-stop.sh EXIT
export VMMC_WINE_TESTS=1
echo "== cargo test"
cargo test --workspace
