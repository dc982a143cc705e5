#!/usr/bin/env bash
# Installs what the test suite needs and is missing on this machine. Idempotent: installs
# nothing when everything is there. Each later part of the project adds its needs here.
set -euo pipefail

need_component() {
    if ! cargo "$1" --version >/dev/null 2>&1; then
        echo "install-test-deps: adding the rustup component $2"
        rustup component add "$2"
    fi
}
need_component fmt rustfmt
need_component clippy clippy

# libfuzzer-sys (checked, not run, by the suite) builds libFuzzer with a C++ compiler.
if ! command -v c++ >/dev/null 2>&1; then
    echo "install-test-deps: installing g++"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq g++ >/dev/null
fi
