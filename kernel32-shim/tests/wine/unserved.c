/* Calls the shim does not serve, on a DFS handle: each must fail, never succeed silently.
 * Usage: unserved.exe FILE (on the DFS). Prints one line per call. */
#include <windows.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    HANDLE h = CreateFileA(argv[1], GENERIC_READ | GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, 0, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        printf("create failed: %lu\n", GetLastError());
        return 1;
    }
    DWORD n;
    WriteFile(h, "data", 4, &n, NULL);
    SetLastError(0);
    BOOL locked = LockFile(h, 0, 0, 4, 0);
    printf("LockFile %s %lu\n", locked ? "succeeded" : "failed", locked ? 0 : GetLastError());
    SetLastError(0);
    HANDLE m = CreateFileMappingA(h, NULL, PAGE_READONLY, 0, 0, NULL);
    printf("CreateFileMapping %s %lu\n", m ? "succeeded" : "failed", m ? 0 : GetLastError());
    OVERLAPPED ov = {0};
    SetLastError(0);
    char buf[4];
    BOOL r = ReadFileEx(h, buf, 4, &ov, NULL);
    printf("ReadFileEx %s %lu\n", r ? "succeeded" : "failed", r ? 0 : GetLastError());
    CloseHandle(h);
    return 0;
}
