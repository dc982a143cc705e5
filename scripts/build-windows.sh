#!/usr/bin/env bash
# Builds what runs on Windows (x86_64-pc-windows-gnu, with mingw-w64) and lints it for that
# target: the libraries that port there; the examples the Wine tests run
# (dfs-client/tests/wine.rs); the WinSock wrapper (vmmc_winsock.dll, and the ws2_32.dll and
# wsock32.dll forwarders beside it); and the C WinSock test program, for Windows (ws2_32 and
# wsock32 builds) and for Linux (the kernel-TCP peer), into TARGET/wsping/
# (winsock-wrapper/tests/wine.rs). scripts/install-test-deps.sh installs the target and tools.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-pc-windows-gnu
out="${CARGO_TARGET_DIR:-$(pwd)/target}"
crates=(-p vmmc-nic -p vmmc-sockets -p dfs-proto -p dfs-client -p winsock-wrapper)
examples=(--example echo_peer --example dfs_smoke --example std_ping)
cargo clippy --target "$target" "${crates[@]}" --lib "${examples[@]}" -- -D warnings
# The unit tests that scripts/test.sh runs under Wine (the integration tests are Linux's).
cargo clippy --target "$target" "${crates[@]}" --lib --profile test -- -D warnings
cargo build --target "$target" "${crates[@]}" --lib "${examples[@]}"
winsock-wrapper/build.sh "$out/$target/debug"
mkdir -p "$out/wsping"
src=winsock-wrapper/tests/c/wsping.c
x86_64-w64-mingw32-gcc -O2 -Wall -Werror -o "$out/wsping/wsping.exe" "$src" -lws2_32
x86_64-w64-mingw32-gcc -O2 -Wall -Werror -DWSOCK32 -o "$out/wsping/wsping32.exe" "$src" -lwsock32
cc -O2 -Wall -Werror -o "$out/wsping/wsping" "$src"
# kernel32-shim's Windows face: the DLL, its launcher dfs-run.exe and the std::fs program
# its Wine tests (kernel32-shim/tests/wine.rs) run.
cargo clippy --target "$target" -p kernel32-shim --lib --bins --example std_fs -- -D warnings
cargo build --target "$target" -p kernel32-shim --lib --bins --example std_fs
x86_64-w64-mingw32-gcc -O2 -Wall -Werror -o "$out/wsping/wsptr.exe" winsock-wrapper/tests/c/wsptr.c -lws2_32
