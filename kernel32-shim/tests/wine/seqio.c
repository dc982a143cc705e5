/* Sequential throughput through the Win32 API: writes FILE of SIZE MiB in 1 MiB WriteFile
 * calls (then FlushFileBuffers), and reads it back in 1 MiB ReadFile calls; prints
 * "write MB/s" and "read MB/s" (10^6 bytes per second). Usage: seqio.exe FILE SIZE_MIB */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>

#define MB (1 << 20)

static double now(void) {
    LARGE_INTEGER f, c;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&c);
    return (double)c.QuadPart / (double)f.QuadPart;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    long size = atol(argv[2]);
    unsigned char *buf = malloc(MB);
    for (int i = 0; i < MB; i++) buf[i] = (unsigned char)i;
    HANDLE h = CreateFileA(argv[1], GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, 0, NULL);
    if (h == INVALID_HANDLE_VALUE) { printf("create failed %lu\n", GetLastError()); return 1; }
    double t = now();
    DWORD n;
    for (long i = 0; i < size; i++) {
        if (!WriteFile(h, buf, MB, &n, NULL) || n != MB) { printf("write failed %lu\n", GetLastError()); return 1; }
    }
    FlushFileBuffers(h);
    CloseHandle(h);
    double w = now() - t;
    h = CreateFileA(argv[1], GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, 0, NULL);
    if (h == INVALID_HANDLE_VALUE) { printf("open failed %lu\n", GetLastError()); return 1; }
    t = now();
    long long total = 0;
    for (;;) {
        if (!ReadFile(h, buf, MB, &n, NULL)) { printf("read failed %lu\n", GetLastError()); return 1; }
        if (n == 0) break;
        total += n;
    }
    double r = now() - t;
    CloseHandle(h);
    if (total != (long long)size * MB) { printf("read %lld bytes\n", total); return 1; }
    printf("write %.0f\nread %.0f\n", size * (double)MB / w / 1e6, size * (double)MB / r / 1e6);
    return 0;
}
