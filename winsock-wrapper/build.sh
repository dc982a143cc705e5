#!/usr/bin/env bash
# Makes ws2_32.dll and wsock32.dll beside vmmc_winsock.dll: forwarders with the system DLLs'
# export names and ordinals (exports/*.txt, read from Wine 8.0's, which match Windows'), each
# name leading to vmmc_winsock.dll's vmmc_NAME. wsock32's own extras (AcceptEx, TransmitFile,
# GetAddressByName, ...) lead to mswsock.dll, which has them all; WsControl (an undocumented
# TCP/IP driver call) is left out.
#   winsock-wrapper/build.sh DIR     (DIR holds vmmc_winsock.dll; cargo's target/<triple>/<profile>)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="$1"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
{
    echo "LIBRARY ws2_32.dll"
    echo "EXPORTS"
    awk '{ printf "    %s = vmmc_winsock.vmmc_%s @%s\n", $1, $1, $2 }' "$here/exports/ws2_32.txt"
} >"$tmp/ws2_32.def"
{
    echo "LIBRARY wsock32.dll"
    echo "EXPORTS"
    awk 'NR == FNR { ws[$1] = 1; next }
         $1 == "WsControl" { next }
         $1 in ws { printf "    %s = vmmc_winsock.vmmc_%s @%s\n", $1, $1, $2; next }
         { printf "    %s = mswsock.%s @%s\n", $1, $1, $2 }' \
        "$here/exports/ws2_32.txt" "$here/exports/wsock32.txt"
} >"$tmp/wsock32.def"
# No C runtime: the DLLs are export tables and nothing else.
echo "int __stdcall DllMainCRTStartup(void *h, unsigned r, void *p) { return 1; }" >"$tmp/empty.c"
for m in ws2_32 wsock32; do
    x86_64-w64-mingw32-gcc -shared -nostdlib -o "$dir/$m.dll" "$tmp/empty.c" "$tmp/$m.def"
done
