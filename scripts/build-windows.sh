#!/usr/bin/env bash
# Builds what runs on Windows (x86_64-pc-windows-gnu, with mingw-w64): the libraries that
# port there, and the example programs the Wine tests run (dfs-client/tests/wine.rs), and
# lints them for that target. scripts/install-test-deps.sh installs the target and the tools.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-pc-windows-gnu
crates=(-p vmmc-nic -p vmmc-sockets -p dfs-proto -p dfs-client)
examples=(--example echo_peer --example dfs_smoke)
cargo clippy --target "$target" "${crates[@]}" --lib "${examples[@]}" -- -D warnings
cargo build --target "$target" "${crates[@]}" --lib "${examples[@]}"
# The unit tests that scripts/test.sh runs under Wine (the integration tests are Linux's).
cargo clippy --target "$target" "${crates[@]}" --lib --profile test -- -D warnings
# kernel32-shim's Windows face: the DLL, its launcher dfs-run.exe and the std::fs program
# its Wine tests (kernel32-shim/tests/wine.rs) run.
cargo clippy --target "$target" -p kernel32-shim --lib --bins --example std_fs -- -D warnings
cargo build --target "$target" -p kernel32-shim --lib --bins --example std_fs
