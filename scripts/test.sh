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
# Whatever runs under Wine from here on, the wineserver it starts is stopped however the run
# ends.
trap ./scripts/wine-stop.sh EXIT
echo "== Windows unit tests, under Wine"
CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$(pwd)/scripts/wine-run.sh" \
    cargo test --target x86_64-pc-windows-gnu -p vmmc-nic -p vmmc-sockets -p dfs-proto \
    -p dfs-client --lib
# The Wine tests against Linux peers (dfs-client/tests/wine.rs) run with the rest.
export VMMC_WINE_TESTS=1
echo "== cargo test"
cargo test --workspace
