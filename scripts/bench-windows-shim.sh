#!/usr/bin/env bash
# Sequential throughput of an unmodified Windows program under Wine (kernel32-shim's
# tests/wine/seqio.c: 1 MiB WriteFile calls, then, in another run after every cache but the
# export's tmpfs is dropped, 1 MiB ReadFile calls) on three targets in one run, interleaved
# over the rounds:
#   local  a directory of the local file system, as Wine's Z: drive shows it;
#   fuse   the DFS mounted through FUSE (`dfs mount`, tcp backend), as a Wine drive;
#   shim   the DFS through the Windows face (`dfs-run.exe ... M:`, tcp backend).
# Both DFS targets talk to the same dfs-server, over tcp on 127.0.0.1 with a secret (the
# only backend the Windows stack has). Prints each round, the medians, and the ratios.
#
# usage: scripts/bench-windows-shim.sh [SIZE_MIB (256)] [ROUNDS (3)]   (root: it mounts)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
size="${1:-256}"
rounds="${2:-3}"
target="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release -q -p dfs-server -p dfs-client --bins
cargo build --release -q --target x86_64-pc-windows-gnu -p kernel32-shim --lib --bins
win="$target/x86_64-pc-windows-gnu/release"

work="$(mktemp -d /tmp/dfs-wine-bench.XXXXXX)"
server_pid=
cleanup() {
    umount -l "$work/mnt" 2>/dev/null || true
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    umount -l "$work" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# The export and the local directory on tmpfs: dropping caches before each read empties the
# FUSE mount's page cache (a client's cold read) but keeps the files in memory on both
# sides, so no disk takes part.
mount -t tmpfs -o size=$((size * 4 + 256))m tmpfs "$work"
mkdir -p "$work/export" "$work/local" "$work/mnt"
head -c 32 /dev/urandom | base64 > "$work/secret"
chmod 600 "$work/secret"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
addr="tcp:127.0.0.1:$port"
"$target/release/dfs-server" --export "$work/export" --listen "$addr" \
    --secret "$work/secret" --handle-key "$work/key" --squash none 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do grep -q serving "$work/server.log" 2>/dev/null && break; sleep 0.1; done
"$target/release/dfs" mount "$addr" "$work/mnt" -o "secret=$work/secret" >/dev/null
x86_64-w64-mingw32-gcc -O2 -o "$work/seqio.exe" kernel32-shim/tests/wine/seqio.c
wpath() { echo "Z:$1" | tr / '\\'; }
seqio="$(wpath "$work/seqio.exe")"

run() {
    case "$1" in
    local) scripts/wine-run.sh "$seqio" "$2" "$(wpath "$work/local/f")" "$size" ;;
    fuse) scripts/wine-run.sh "$seqio" "$2" "$(wpath "$work/mnt/f")" "$size" ;;
    shim) scripts/wine-run.sh "$win/dfs-run.exe" --secret "$(wpath "$work/secret")" \
        --uid 0 --gid 0 "$addr" M: -- "$seqio" "$2" 'M:\g' "$size" ;;
    esac
}

declare -A results
for r in $(seq "$rounds"); do
    for t in local fuse shim; do
        out="$(run "$t" write | tr -d '\r')"
        sync
        echo 3 > /proc/sys/vm/drop_caches
        out="$out $(run "$t" read | tr -d '\r')"
        w="$(echo "$out" | grep -o 'write [0-9]*' | awk '{print $2}')"
        rd="$(echo "$out" | grep -o 'read [0-9]*' | awk '{print $2}')"
        [ -n "$w" ] && [ -n "$rd" ] || { echo "$t: $out" >&2; exit 1; }
        echo "round $r $t: write $w MB/s, read $rd MB/s"
        results[$t.write]+="$w "
        results[$t.read]+="$rd "
    done
    rm -f "$work/local/f" "$work/export/f" "$work/export/g"
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
printf '%-6s %10s %10s %10s %12s %12s\n' "" local fuse shim shim/fuse shim/local
for op in write read; do
    l="$(echo "${results[local.$op]}" | median)"
    f="$(echo "${results[fuse.$op]}" | median)"
    s="$(echo "${results[shim.$op]}" | median)"
    printf '%-6s %10s %10s %10s %12.2f %12.2f\n' "$op" "$l" "$f" "$s" \
        "$(echo "$s / $f" | bc -l)" "$(echo "$s / $l" | bc -l)"
done
echo "(MB/s = 10^6 bytes/s, medians of $rounds rounds, ${size} MiB, commit $(git describe --always --dirty))"
