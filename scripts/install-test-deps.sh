#!/usr/bin/env bash
# Installs what the test suite needs and is missing on this machine. Idempotent: installs
# nothing when everything is there. Each later part of the project adds its needs here.
set -euo pipefail
cd "$(dirname "$0")/.."

need_component() {
    if ! cargo "$1" --version >/dev/null 2>&1; then
        echo "install-test-deps: adding the rustup component $2"
        rustup component add "$2"
    fi
}
need_component fmt rustfmt
need_component clippy clippy

# The Windows build (scripts/build-windows.sh) and its tests under Wine
# (dfs-client/tests/wine.rs): the rustup target, mingw-w64 to link it, Wine to run it.
if ! rustup target list --installed | grep -qx x86_64-pc-windows-gnu; then
    echo "install-test-deps: adding the rustup target x86_64-pc-windows-gnu"
    rustup target add x86_64-pc-windows-gnu
fi

# libfuzzer-sys (checked, not run, by the suite) builds libFuzzer with a C++ compiler.
if ! command -v c++ >/dev/null 2>&1; then
    echo "install-test-deps: installing g++"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq g++ >/dev/null
fi

# The file-system conformance tools the mount tests run (dfs-client/tests/conformance.rs),
# built from crates.io into the clone's own target directory, pinned.
tools="$(pwd)/target/tools"
need_tool() {
    if [ ! -x "$tools/bin/$1" ]; then
        echo "install-test-deps: cargo install $1 $2"
        cargo install --quiet --locked --root "$tools" "$1" --version "$2"
    fi
}
need_tool pjdfstest 0.2.2
need_tool fsx 0.3.2

# The mount tests use cc, git, mount(8) and /dev/fuse; the bench test compares with sshfs
# over a throwaway sshd.
missing=()
command -v sshfs >/dev/null 2>&1 || missing+=(sshfs)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v git >/dev/null 2>&1 || missing+=(git)
# The shim's tests (kernel32-shim/tests) run these everyday programs under dfs run.
command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v mount >/dev/null 2>&1 || missing+=(mount)
# The attack tests run as real unprivileged accounts (useradd, setpriv), under a descriptor
# limit (prlimit), with clients in network namespaces (ip, nsenter).
command -v useradd >/dev/null 2>&1 || missing+=(passwd)
for t in setpriv prlimit nsenter; do
    command -v "$t" >/dev/null 2>&1 || { missing+=(util-linux); break; }
done
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# The mount tests run lsattr (its ioctls) and pgrep.
command -v lsattr >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v pgrep >/dev/null 2>&1 || missing+=(procps)
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || missing+=(gcc-mingw-w64-x86-64)
[ -x /usr/lib/wine/wine64 ] || missing+=(wine64)
# The socket preload's tests run unmodified socket programs (vmmc-preload/tests).
for t in iperf3 sockperf socat; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-test-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -c /dev/fuse ]; then
    modprobe fuse 2>/dev/null || true
    [ -c /dev/fuse ] || { echo "install-test-deps: /dev/fuse is missing; the mount tests need FUSE" >&2; exit 1; }
fi
