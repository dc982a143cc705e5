/* A stand-in for bcryptprimitives.dll under Wine 8.0, whose own lacks ProcessPrng: Rust's
 * standard library (1.78 and later) imports ProcessPrng for every random number it draws
 * (HashMap seeds among them), so without it no Rust program for Windows starts under Wine
 * 8.0. It fills the buffer from RtlGenRandom (advapi32!SystemFunction036), the system's
 * CSPRNG under another name, in pieces its ULONG length can hold. Placed beside the program
 * and loaded with WINEDLLOVERRIDES=bcryptprimitives=n,b (scripts/wine-run.sh does both). */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
