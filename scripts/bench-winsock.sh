#!/usr/bin/env bash
# The WinSock wrapper's figures (BENCHMARKS.md): an unmodified WinSock program
# (winsock-wrapper/tests/c/wsping.c, ws2_32 build) under Wine, with and without the wrapper,
# against a Linux peer over tcp and against another Wine process; round trip of 64 bytes and
# bulk throughput. Release builds. Run it alone: flock /work/bench.lock scripts/bench-winsock.sh
#   ROUNDS (default 20000) and MIB (default 512) set the sizes; RUNS (default 3) the repeats,
#   of which the median is reported.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-20000}"
mib="${MIB:-512}"
runs="${RUNS:-3}"
out="${CARGO_TARGET_DIR:-$(pwd)/target}"
tw=x86_64-pc-windows-gnu
cargo build -q --release --target "$tw" -p winsock-wrapper --lib --example std_ping
cargo build -q --release --target "$tw" -p vmmc-sockets --example echo_peer
cargo build -q --release -p vmmc-sockets --example echo_peer
winsock-wrapper/build.sh "$out/$tw/release"
bench="$out/wsping-bench"
rm -rf "$bench"
mkdir -p "$bench/plain" "$bench/wrapped"
src=winsock-wrapper/tests/c/wsping.c
x86_64-w64-mingw32-gcc -O2 -o "$bench/plain/wsping.exe" "$src" -lws2_32
cp "$bench/plain/wsping.exe" "$bench/wrapped/"
cp "$out/$tw/release/"{vmmc_winsock,ws2_32,wsock32}.dll "$bench/wrapped/"
cc -O2 -o "$bench/wsping" "$src"
echo_peer="$out/release/examples/echo_peer"
wine=scripts/wine-run.sh

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    scripts/wine-stop.sh
}
trap cleanup EXIT

# start NAME CMD...: a server in the background, waiting for its "listening" line.
start() {
    local log="$bench/$1.log"
    shift
    "$@" >"$log" 2>&1 &
    pids+=($!)
    for _ in $(seq 600); do
        grep -q listening "$log" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench-winsock: $* did not start" >&2
    cat "$log" >&2
    exit 1
}

# median VALUE-COMMAND...: runs it RUNS times, prints the median of the numbers it prints.
median() {
    local vals=()
    for _ in $(seq "$runs"); do
        vals+=("$("$@" | awk '{print $2}')")
    done
    printf '%s\n' "${vals[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

p_lin_tcp=47311 p_wine_tcp=47312 p_wrap_lin=47313 p_wrap_wine=47314
v_lin=47411 v_wine=47412
start lin-tcp "$bench/wsping" server "$p_lin_tcp"
start lin-vmmc "$echo_peer" listen "tcp:127.0.0.1:$v_lin"
start wine-tcp "$wine" "$bench/plain/wsping.exe" server "$p_wine_tcp"
WINEDLLOVERRIDES="wsock32,ws2_32=n,b" VMMC_ROUTES="127.0.0.1:$p_wrap_wine tcp:127.0.0.1:$v_wine strict" \
    start wine-vmmc "$wine" "$bench/wrapped/wsping.exe" server "$p_wrap_wine"

plain() { "$wine" "$bench/plain/wsping.exe" "$@"; }
wrapped_to() {
    local port="$1" target="$2"
    shift 2
    WINEDLLOVERRIDES="wsock32,ws2_32=n,b" VMMC_ROUTES="127.0.0.1:$port $target strict" \
        "$wine" "$bench/wrapped/wsping.exe" "$@"
}

printf '%-52s %12s %12s\n' "wsping (ws2_32), Wine 8.0, loopback" "rtt_us" "MiB/s"
row() {
    local name="$1"
    shift
    local rtt bw
    rtt="$(median "$@" ping 127.0.0.1 "$PORT" "$rounds" 64)"
    bw="$(median "$@" bulk 127.0.0.1 "$PORT" "$mib")"
    printf '%-52s %12s %12s\n' "$name" "$rtt" "$bw"
}
PORT=$p_lin_tcp row "Wine -> Linux, system TCP (no wrapper)" plain
PORT=$p_wrap_lin row "Wine (wrapped) -> Linux VMMC (tcp backend)" wrapped_to "$p_wrap_lin" "tcp:127.0.0.1:$v_lin"
rtt="$(median "$wine" "$out/$tw/release/examples/echo_peer.exe" ping "tcp:127.0.0.1:$v_lin" "$rounds" 64)"
bw="$(median "$wine" "$out/$tw/release/examples/echo_peer.exe" bulk "tcp:127.0.0.1:$v_lin" "$mib")"
printf '%-52s %12s %12s\n' "Wine echo_peer.exe (VMMC itself, no wrapper) -> Linux" "$rtt" "$bw"
PORT=$p_wine_tcp row "Wine -> Wine, system TCP (no wrapper)" plain
PORT=$p_wrap_wine row "Wine (wrapped) -> Wine (wrapped), VMMC (tcp backend)" wrapped_to "$p_wrap_wine" "tcp:127.0.0.1:$v_wine"
PORT=$p_lin_tcp row "Linux -> Linux, kernel TCP (reference)" "$bench/wsping"
rtt="$(median "$echo_peer" ping "tcp:127.0.0.1:$v_lin" "$rounds" 64)"
bw="$(median "$echo_peer" bulk "tcp:127.0.0.1:$v_lin" "$mib")"
printf '%-52s %12s %12s\n' "Linux -> Linux, VMMC tcp backend (echo_peer, reference)" "$rtt" "$bw"
