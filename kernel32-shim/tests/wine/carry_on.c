/* Writes a file on the DFS, waits while the test restarts the server, then reads it back,
 * appends to it and reads that back: a program that carries on across a server restart.
 * Usage: carry_on.exe FILE GO_FILE (the test creates GO_FILE once the server is back). */
#include <windows.h>
#include <stdio.h>
#include <string.h>

#define MB (1 << 20)
static unsigned char block[MB], back[MB];

static int check(HANDLE h, DWORD at, const char *what) {
    DWORD n = 0;
    SetFilePointer(h, at, NULL, FILE_BEGIN);
    if (!ReadFile(h, back, MB, &n, NULL) || n != MB || memcmp(back, block, MB) != 0) {
        printf("%s: read back %lu bytes, error %lu\n", what, n, GetLastError());
        return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    for (int i = 0; i < MB; i++) block[i] = (unsigned char)(i * 7 + 3);
    HANDLE h = CreateFileA(argv[1], GENERIC_READ | GENERIC_WRITE, 0, NULL, CREATE_ALWAYS, 0, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        printf("create failed: %lu\n", GetLastError());
        return 1;
    }
    DWORD n = 0;
    if (!WriteFile(h, block, MB, &n, NULL) || n != MB) {
        printf("write failed: %lu\n", GetLastError());
        return 1;
    }
    printf("written\n");
    fflush(stdout);
    for (int i = 0; i < 600 && GetFileAttributesA(argv[2]) == INVALID_FILE_ATTRIBUTES; i++) Sleep(100);
    if (!check(h, 0, "after the restart")) return 1;
    SetFilePointer(h, 0, NULL, FILE_END);
    if (!WriteFile(h, block, MB, &n, NULL) || n != MB) {
        printf("append failed: %lu\n", GetLastError());
        return 1;
    }
    if (!check(h, MB, "the appended block")) return 1;
    printf("size %lu\n", GetFileSize(h, NULL));
    CloseHandle(h);
    printf("verified\n");
    return 0;
}
