#!/usr/bin/env bash
# Runs a Windows program (built for x86_64-pc-windows-gnu) under Wine, as the tests and the
# benchmarks do: `scripts/wine-run.sh PROGRAM.exe ARGS...`. Also usable as cargo's runner:
#   CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=scripts/wine-run.sh cargo test --target ...
#
# It keeps everything inside the clone's target directory ($CARGO_TARGET_DIR, else target/):
# the Wine prefix (target/wine/prefix, made on first use), and the stub bcryptprimitives.dll
# that Rust's std needs on Wine 8.0 (scripts/wine/bcryptprimitives.c), built with mingw-w64
# and copied beside the program. WINEDEBUG=-all unless set. The wineserver it starts exits
# by itself a few seconds after the last program; scripts/wine-stop.sh stops it at once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
wine_dir="$target/wine"
mkdir -p "$wine_dir"
export WINEPREFIX="${WINEPREFIX:-$wine_dir/prefix}"
export WINEDEBUG="${WINEDEBUG:--all}"
wine64=/usr/lib/wine/wine64
[ -x "$wine64" ] || wine64="$(command -v wine64 || command -v wine)"

exe="$1"
shift
stub="$wine_dir/bcryptprimitives.dll"
(
    # Tests start several programs at once: one builds the stub and the prefix, the others
    # wait for it.
    flock 9
    src="$root/scripts/wine/bcryptprimitives.c"
    if [ ! -f "$stub" ] || [ "$src" -nt "$stub" ]; then
        x86_64-w64-mingw32-gcc -O2 -shared -o "$stub.tmp" "$src" \
            "$root/scripts/wine/bcryptprimitives.def" -ladvapi32
        mv "$stub.tmp" "$stub"
    fi
    if [ ! -f "$WINEPREFIX/system.reg" ]; then
        # No Mono or Gecko: nothing here needs .NET or a browser engine, and their installers
        # would ask to download them.
        WINEDLLOVERRIDES="mscoree,mshtml=" "$wine64" wineboot -i >/dev/null 2>&1
    fi
    # Beside a program of ours, named by its Unix path or as Wine's Z: drive shows it
    # (Z:\tmp\x.exe); any other Windows path (C:\windows\...) is Wine's own program, which
    # needs no stub.
    unix="$exe"
    case "$exe" in [Zz]:*) unix="$(printf '%s' "${exe:2}" | tr '\\' /)" ;; esac
    if [ -f "$unix" ]; then
        dir="$(dirname "$unix")"
        cmp -s "$stub" "$dir/bcryptprimitives.dll" || cp -f "$stub" "$dir/bcryptprimitives.dll"
    fi
) 9>"$wine_dir/.lock"

export WINEDLLOVERRIDES="bcryptprimitives=n,b${WINEDLLOVERRIDES:+;$WINEDLLOVERRIDES}"
exec "$wine64" "$exe" "$@"
