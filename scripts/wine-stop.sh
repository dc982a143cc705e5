#!/usr/bin/env bash
# Stops the wineserver of the clone's Wine prefix (see scripts/wine-run.sh), and with it any
# Wine program still running there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
export WINEPREFIX="${WINEPREFIX:-$target/wine/prefix}"
[ -d "$WINEPREFIX" ] || exit 0
server=/usr/lib/wine/wineserver64
[ -x "$server" ] || server="$(command -v wineserver)"
"$server" -k 2>/dev/null || true
"$server" -w 2>/dev/null || true
