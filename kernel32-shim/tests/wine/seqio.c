/* Sequential throughput through the Win32 API: `write FILE SIZE_MIB` writes FILE in 1 MiB
 * WriteFile calls (then FlushFileBuffers) and prints "write MB/s"; `read FILE SIZE_MIB`
 * reads it in 1 MiB ReadFile calls, checks its length, and prints "read MB/s" (MB/s being
 * 10^6 bytes per second). Separate runs, so that a benchmark can drop caches between. */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MB (1 << 20)

static double now(void) {
    LARGE_INTEGER f, c;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&c);
    return (double)c.QuadPart / (double)f.QuadPart;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    int writing = strcmp(argv[1], "write") == 0;
    const char *file = argv[2];
    long size = atol(argv[3]);
    unsigned char *buf = malloc(MB);
    for (int i = 0; i < MB; i++) buf[i] = (unsigned char)i;
    DWORD n;
    double t;
    HANDLE h;
    if (writing) {
    h = CreateFileA(file, GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, 0, NULL);
    if (h == INVALID_HANDLE_VALUE) { printf("create failed %lu\n", GetLastError()); return 1; }
    t = now();
    for (long i = 0; i < size; i++) {
        if (!WriteFile(h, buf, MB, &n, NULL) || n != MB) { printf("write failed %lu\n", GetLastError()); return 1; }
    }
    FlushFileBuffers(h);
    CloseHandle(h);
    printf("write %.0f\n", size * (double)MB / (now() - t) / 1e6);
    return 0;
    }
    h = CreateFileA(file, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, 0, NULL);
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
    printf("read %.0f\n", size * (double)MB / r / 1e6);
    return 0;
}
