#!/usr/bin/env bash
# The socket preload's figures: sockperf round trip and iperf3 throughput, unmodified,
# under vmmc-run (shm) and on kernel TCP loopback, in one run, with the ratios.
#   scripts/bench-preload.sh [SECONDS]      (default 5 s a run)
# Round trips are measured three ways, because where the two processes run decides them:
# as the scheduler places them, pinned to two cores (taskset 0 / 1), and pinned to one core
# (0 / 0). Kernel TCP is fastest on one core (a wake-up hands the core over), VMMC on two
# (each side looks at shared memory without a system call).
# Timing runs hold /work/bench.lock when it exists (a shared, noisy machine).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"
target="${CARGO_TARGET_DIR:-$(pwd)/target}"
nice -n 10 cargo build --quiet --release -p vmmc-preload
run="$target/release/vmmc-run"
for t in sockperf iperf3; do
    command -v "$t" >/dev/null || { echo "bench-preload: $t is missing (scripts/install-test-deps.sh)" >&2; exit 1; }
done
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# sockperf ping-pong: prints "avg p50 p99" round trip in microseconds.
pingpong() { # $1: "" (kernel) or "vmmc"; $2, $3: server and client cores, or "" for any
    local port; port=$(free_port)
    local pre=() ps=() pc=()
    [ -n "$1" ] && pre=("$run" --route "127.0.0.1:$port shm:bench-sp-$$-$port strict" --)
    [ -n "${2:-}" ] && ps=(taskset -c "$2") && pc=(taskset -c "$3")
    "${ps[@]}" "${pre[@]}" sockperf server --tcp -i 127.0.0.1 -p "$port" >/dev/null 2>&1 &
    pids+=($!); sleep 0.5
    local out
    # --mps: sockperf sizes its sequence table for 600 K messages/s unless told, and over
    # VMMC on two cores a ping-pong goes faster ("ERROR: _seqN > m_maxSequenceNo").
    out=$("${pc[@]}" "${pre[@]}" sockperf ping-pong --tcp --full-rtt --mps 5000000 -i 127.0.0.1 -p "$port" -t "$secs" 2>&1)
    kill "${pids[-1]}" 2>/dev/null || true
    local avg p50 p99
    avg=$(sed -n 's/.*avg-rtt=\([0-9.]*\).*/\1/p' <<<"$out" | head -1)
    p50=$(sed -n 's/.*percentile 50.000 = *\([0-9.]*\).*/\1/p' <<<"$out" | head -1)
    p99=$(sed -n 's/.*percentile 99.000 = *\([0-9.]*\).*/\1/p' <<<"$out" | head -1)
    [ -n "$avg" ] || { echo "bench-preload: sockperf failed: $out" >&2; exit 1; }
    echo "$avg $p50 $p99"
}

# iperf3 one stream: prints received Gbit/s. Arguments as for pingpong.
throughput() {
    local port; port=$(free_port)
    local pre=() ps=() pc=()
    [ -n "$1" ] && pre=("$run" --route "127.0.0.1:$port shm:bench-ip-$$-$port strict" --)
    [ -n "${2:-}" ] && ps=(taskset -c "$2") && pc=(taskset -c "$3")
    "${ps[@]}" "${pre[@]}" iperf3 -s -1 -p "$port" >/dev/null 2>&1 &
    pids+=($!); sleep 0.5
    local out
    out=$("${pc[@]}" "${pre[@]}" iperf3 -c 127.0.0.1 -p "$port" -t "$secs" -J 2>&1)
    python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))' <<<"$out" \
        || { echo "bench-preload: iperf3 failed: $out" >&2; exit 1; }
}

measure() {
    sp_k=$(pingpong ""); sp_v=$(pingpong vmmc)
    sp2_k=$(pingpong "" 0 1); sp2_v=$(pingpong vmmc 0 1)
    sp1_k=$(pingpong "" 0 0); sp1_v=$(pingpong vmmc 0 0)
    ip_k=$(throughput ""); ip_v=$(throughput vmmc)
    ip2_k=$(throughput "" 0 1); ip2_v=$(throughput vmmc 0 1)
    ip1_k=$(throughput "" 0 0); ip1_v=$(throughput vmmc 0 0)
}
if [ -e /work/bench.lock ]; then
    exec 9>/work/bench.lock; flock 9
fi
measure
echo "commit $(git rev-parse --short HEAD), $(nproc) cores, ${secs}s a run, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf 'sockperf ping-pong RTT (us)          avg      p50      p99\n'
report() { # $1: placement, $2: kernel figures, $3: vmmc figures
    read -r k_avg k_p50 k_p99 <<<"$2"
    read -r v_avg v_p50 v_p99 <<<"$3"
    printf '  %-34s\n' "$1"
    printf '    kernel TCP loopback         %8s %8s %8s\n' "$k_avg" "$k_p50" "$k_p99"
    printf '    vmmc-run (shm)              %8s %8s %8s\n' "$v_avg" "$v_p50" "$v_p99"
    python3 -c "print('    ratio VMMC/kernel           %8.3f %8.3f %8.3f   (target <= 0.10)' % ($v_avg/$k_avg, $v_p50/$k_p50, $v_p99/$k_p99))"
}
report "as scheduled" "$sp_k" "$sp_v"
report "two cores (server 0, client 1)" "$sp2_k" "$sp2_v"
report "one core (both on 0)" "$sp1_k" "$sp1_v"
read -r k1_avg k1_p50 _ <<<"$sp1_k"
read -r v2_avg v2_p50 _ <<<"$sp2_v"
python3 -c "print('  each at its best placement: VMMC two cores / kernel one core  avg %.3f  p50 %.3f' % ($v2_avg/$k1_avg, $v2_p50/$k1_p50))"
printf 'iperf3 one stream (Gbit/s)        kernel     vmmc    ratio   (target >= 3)\n'
for row in "as scheduled:$ip_k:$ip_v" "two cores (0, 1):$ip2_k:$ip2_v" "one core (0, 0):$ip1_k:$ip1_v"; do
    IFS=: read -r name k v <<<"$row"
    python3 -c "print('  %-28s %8.2f %8.2f %8.2f' % ('$name', $k, $v, $v/$k))"
done
