#!/usr/bin/env bash
# The main job on a fresh machine: build, serve a default export, mount it, write and read a
# file through the mount, and leave it mounted.
#
#   deploy/quickstart.sh              start (or say it is running) and leave it mounted
#   deploy/quickstart.sh --foreground the same, then wait; Ctrl-C unmounts and stops the server
#   deploy/quickstart.sh stop         unmount and stop the server
#
# It installs copies of dfs and dfs-server in /usr/local/bin, of dfs as /sbin/mount.dfs
# (for `mount -t dfs` and fstab) and of the preload library `dfs run` uses in /usr/local/lib,
# so that the commands it prints work as typed and keep working when this clone moves.
#
# Settings (environment): DFS_EXPORT (default /srv/dfs), DFS_MOUNT (/mnt/dfs), DFS_ADDR
# (shm:dfs), DFS_STATE (/run/dfs: logs, pid file), DFS_SECRET (/etc/dfs/secret, made if
# missing), DFS_PROFILE (release; debug builds faster), DFS_BIN (install the binaries in this
# directory and build nothing), DFS_PREFIX (/usr/local: binaries go to its bin/, the library to its lib/), DFS_SBIN
# (/sbin: where mount.dfs goes).
set -euo pipefail
cd "$(dirname "$0")/.."

export_dir="${DFS_EXPORT:-/srv/dfs}"
mount_dir="${DFS_MOUNT:-/mnt/dfs}"
addr="${DFS_ADDR:-shm:dfs}"
state="${DFS_STATE:-/run/dfs}"
secret="${DFS_SECRET:-/etc/dfs/secret}"
profile="${DFS_PROFILE:-release}"
built="${DFS_BIN:-target/$profile}"
bin="${DFS_PREFIX:-/usr/local}/bin"
lib="${DFS_PREFIX:-/usr/local}/lib"
sbin="${DFS_SBIN:-/sbin}"
pidfile="$state/server.pid"

say() { echo "quickstart: $*"; }

stop() {
    [ -x "$bin/dfs" ] || bin="$built"
    if grep -qs " $mount_dir fuse" /proc/mounts; then
        "$bin/dfs" umount "$mount_dir" || "$bin/dfs" umount --lazy "$mount_dir"
        say "unmounted $mount_dir"
    fi
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        kill "$(cat "$pidfile")"
        for _ in $(seq 100); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
        say "stopped dfs-server"
    fi
    rm -f "$pidfile"
}

if [ "${1:-}" = stop ]; then
    stop
    exit 0
fi
foreground=no
[ "${1:-}" = --foreground ] && foreground=yes

if [ "$(id -u)" != 0 ]; then
    echo "quickstart: run as root (it mounts with FUSE and serves $export_dir)" >&2
    exit 1
fi

if [ -z "${DFS_BIN:-}" ]; then
    say "building ($profile; the first build takes a few minutes on 2 cores)"
    if [ "$profile" = release ]; then
        cargo build --release -p dfs-server -p dfs-client -p kernel32-shim
    else
        cargo build -p dfs-server -p dfs-client -p kernel32-shim
    fi
fi

# Copies, not links: they keep working when the clone moves or its target/ is cleaned.
# Through a temporary name, so that a running mount never meets half a file.
install_copy() {
    mkdir -p "$(dirname "$2")"
    install -m 0755 "$1" "$2.new"
    mv -f "$2.new" "$2"
}
install_copy "$built/dfs" "$bin/dfs"
install_copy "$built/dfs-server" "$bin/dfs-server"
install_copy "$built/dfs" "$sbin/mount.dfs"
say "installed $bin/dfs, $bin/dfs-server and $sbin/mount.dfs"
# `dfs run` finds it in ../lib from its own directory.
if [ -f "$built/libkernel32_shim.so" ]; then
    install_copy "$built/libkernel32_shim.so" "$lib/libkernel32_shim.so"
    say "installed $lib/libkernel32_shim.so (for dfs run)"
else
    say "no $built/libkernel32_shim.so: dfs run will not work (cargo build -p kernel32-shim)"
fi

mkdir -p "$export_dir" "$mount_dir" "$state" "$(dirname "$secret")"
if [ ! -s "$secret" ]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$secret")
    say "made a shared secret in $secret"
fi

if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    say "dfs-server is already running (pid $(cat "$pidfile"))"
else
    # Clients on this host act as themselves (root included): --squash none.
    setsid "$bin/dfs-server" --export "$export_dir" --listen "$addr" --secret "$secret" \
        --squash none --handle-key "$state/handle.key" -v </dev/null >>"$state/server.log" 2>&1 &
    echo $! > "$pidfile"
    for _ in $(seq 100); do
        grep -qs "serving" "$state/server.log" && break
        kill -0 "$(cat "$pidfile")" 2>/dev/null || { cat "$state/server.log" >&2; exit 1; }
        sleep 0.1
    done
    say "dfs-server serves $export_dir on $addr (log: $state/server.log)"
fi

if grep -qs " $mount_dir fuse" /proc/mounts; then
    say "$mount_dir is already mounted"
else
    "$bin/dfs" mount "$addr" "$mount_dir" --secret "$secret" --log "$state/mount.log"
fi

probe="$mount_dir/hello-from-dfs.txt"
echo "written through the dfs mount at $(date -u +%FT%TZ)" > "$probe"
say "read back: $(cat "$probe")"
say "the same file in the export: $(cat "$export_dir/hello-from-dfs.txt")"
if [ -f "$lib/libkernel32_shim.so" ]; then
    say "and without the mount (dfs run): $("$bin/dfs" run --secret "$secret" "$addr" /dfs -- \
        cat /dfs/hello-from-dfs.txt)"
fi

if [ "$foreground" = yes ]; then
    say "mounted on $mount_dir; Ctrl-C unmounts and stops the server"
    trap 'stop; exit 0' INT TERM
    while grep -qs " $mount_dir fuse" /proc/mounts; do sleep 1; done
    stop
else
    say "mounted on $mount_dir and left running"
    say "unmount with: dfs umount $mount_dir; stop both with: deploy/quickstart.sh stop"
fi
