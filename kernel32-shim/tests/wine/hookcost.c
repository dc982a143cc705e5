/* What the hooks cost a program's calls that are not the DFS's: GetFileAttributesW of a
 * local file and 4 KiB ReadFile calls on a local file, N times each; prints ns per call.
 * Usage: hookcost.exe LOCAL_FILE N (run with and without dfs-run.exe to compare). */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>

static double now(void) {
    LARGE_INTEGER f, c;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&c);
    return (double)c.QuadPart / (double)f.QuadPart;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    long n = atol(argv[2]);
    wchar_t path[600];
    MultiByteToWideChar(CP_UTF8, 0, argv[1], -1, path, 600);
    double t = now();
    for (long i = 0; i < n; i++) GetFileAttributesW(path);
    double attrs = (now() - t) / n * 1e9;
    HANDLE h = CreateFileW(path, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, 0, NULL);
    if (h == INVALID_HANDLE_VALUE) return 1;
    char buf[4096];
    DWORD got;
    t = now();
    for (long i = 0; i < n; i++) {
        SetFilePointer(h, 0, NULL, FILE_BEGIN);
        ReadFile(h, buf, sizeof buf, &got, NULL);
    }
    double reads = (now() - t) / n * 1e9;
    CloseHandle(h);
    printf("GetFileAttributesW %.0f ns\nSetFilePointer+ReadFile %.0f ns\n", attrs, reads);
    return 0;
}
