/* The Win32 file API as a program uses it, printing every result and error code, so that a
 * run on a local Wine drive and a run on the DFS through the shim can be compared line by
 * line. Usage: win32_api.exe BASE (a directory that exists; the program works inside it). */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

static wchar_t base[512];

static const wchar_t *P(const wchar_t *rel) {
    static wchar_t buf[4][600];
    static int i;
    i = (i + 1) % 4;
    swprintf(buf[i], 600, L"%ls\\%ls", base, rel);
    return buf[i];
}

/* The call runs once; its error code is read before anything else can change it. */
#define SHOW(what, expr)                                                        \
    do {                                                                        \
        SetLastError(12345);                                                    \
        BOOL r_ = (expr);                                                       \
        DWORD e_ = GetLastError();                                              \
        printf("%-44s %s %lu\n", what, r_ ? "ok" : "FAIL", r_ ? 0UL : e_);      \
    } while (0)

static HANDLE open_(const wchar_t *rel, DWORD access, DWORD share, DWORD disp, DWORD flags) {
    SetLastError(12345);
    HANDLE h = CreateFileW(P(rel), access, share, NULL, disp, flags, NULL);
    return h;
}

static void show_open(const char *what, HANDLE h) {
    DWORD e = GetLastError();
    printf("%-44s %s %lu\n", what, h != INVALID_HANDLE_VALUE ? "ok" : "FAIL", e);
}

/* Shows the outcome of an open and closes what it opened. */
static void try_open(const char *what, HANDLE h) {
    show_open(what, h);
    if (h != INVALID_HANDLE_VALUE) CloseHandle(h);
}

static int cmp(const void *a, const void *b) {
    return wcscmp((const wchar_t *)a, (const wchar_t *)b);
}

static void list(const wchar_t *pattern) {
    WIN32_FIND_DATAW fd;
    static wchar_t names[64][300];
    int n = 0;
    HANDLE f = FindFirstFileW(P(pattern), &fd);
    if (f == INVALID_HANDLE_VALUE) {
        printf("find %-39ls FAIL %lu\n", pattern, GetLastError());
        return;
    }
    do {
        if (n < 64) {
            swprintf(names[n++], 300, L"%ls attrs=%lx size=%lu", fd.cFileName,
                     fd.dwFileAttributes & ~FILE_ATTRIBUTE_NOT_CONTENT_INDEXED,
                     (fd.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) ? 0 : fd.nFileSizeLow);
        }
    } while (FindNextFileW(f, &fd));
    DWORD end = GetLastError();
    FindClose(f);
    qsort(names, n, sizeof names[0], cmp);
    printf("find %ls: %d entries, then %lu\n", pattern, n, end);
    for (int i = 0; i < n; i++) printf("  %ls\n", names[i]);
}

static void put(const wchar_t *rel, const char *text) {
    HANDLE h = open_(rel, GENERIC_WRITE, 0, CREATE_ALWAYS, FILE_ATTRIBUTE_NORMAL);
    DWORD n = 0;
    WriteFile(h, text, (DWORD)strlen(text), &n, NULL);
    CloseHandle(h);
}

static void attrs(const char *what, const wchar_t *rel) {
    SetLastError(0);
    DWORD a = GetFileAttributesW(P(rel));
    if (a == INVALID_FILE_ATTRIBUTES) printf("%-44s FAIL %lu\n", what, GetLastError());
    else printf("%-44s attrs=%lx\n", what, a & ~FILE_ATTRIBUTE_NOT_CONTENT_INDEXED);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: win32_api BASE\n");
        return 2;
    }
    MultiByteToWideChar(CP_UTF8, 0, argv[1], -1, base, 512);
    char buf[256];
    DWORD n = 0;
    LARGE_INTEGER li;

    SHOW("CreateDirectoryW d", CreateDirectoryW(P(L"d"), NULL));
    SHOW("CreateDirectoryW d again", CreateDirectoryW(P(L"d"), NULL));
    SHOW("CreateDirectoryW x\\y (no x)", CreateDirectoryW(P(L"x\\y"), NULL));

    HANDLE h = open_(L"d\\a.txt", GENERIC_READ | GENERIC_WRITE, 0, CREATE_NEW, 0);
    show_open("CreateFileW a.txt CREATE_NEW", h);
    SHOW("WriteFile", WriteFile(h, "hello world", 11, &n, NULL));
    printf("  wrote %lu\n", n);
    printf("SetFilePointer 6 -> %lu\n", SetFilePointer(h, 6, NULL, FILE_BEGIN));
    memset(buf, 0, sizeof buf);
    SHOW("ReadFile 5", ReadFile(h, buf, 5, &n, NULL));
    printf("  read %lu: %s\n", n, buf);
    SHOW("ReadFile at end", ReadFile(h, buf, 5, &n, NULL));
    printf("  read %lu\n", n);
    printf("GetFileSize -> %lu\n", GetFileSize(h, NULL));
    SHOW("GetFileSizeEx", GetFileSizeEx(h, &li));
    printf("  size %lld\n", (long long)li.QuadPart);
    li.QuadPart = 0;
    LARGE_INTEGER pos;
    SHOW("SetFilePointerEx end", SetFilePointerEx(h, li, &pos, FILE_END));
    printf("  at %lld\n", (long long)pos.QuadPart);
    li.QuadPart = -20;
    SHOW("SetFilePointerEx before the start", SetFilePointerEx(h, li, &pos, FILE_CURRENT));
    SetFilePointer(h, 5, NULL, FILE_BEGIN);
    SHOW("SetEndOfFile at 5", SetEndOfFile(h));
    printf("GetFileSize -> %lu\n", GetFileSize(h, NULL));
    printf("GetFileType -> %lu\n", GetFileType(h));
    BY_HANDLE_FILE_INFORMATION bi;
    SHOW("GetFileInformationByHandle", GetFileInformationByHandle(h, &bi));
    printf("  attrs=%lx size=%lu links=%lu\n", bi.dwFileAttributes & ~FILE_ATTRIBUTE_NOT_CONTENT_INDEXED,
           bi.nFileSizeLow, bi.nNumberOfLinks);
    FILE_STANDARD_INFO si;
    SHOW("GetFileInformationByHandleEx standard",
         GetFileInformationByHandleEx(h, FileStandardInfo, &si, sizeof si));
    printf("  eof=%lld dir=%d\n", (long long)si.EndOfFile.QuadPart, si.Directory);
    HANDLE h2 = open_(L"d\\a.txt", GENERIC_READ, FILE_SHARE_READ, OPEN_EXISTING, 0);
    try_open("CreateFileW a.txt while open, share 0", h2);
    SHOW("FlushFileBuffers", FlushFileBuffers(h));
    SHOW("CloseHandle", CloseHandle(h));

    h = open_(L"d\\a.txt", GENERIC_WRITE, 0, CREATE_NEW, 0);
    try_open("CreateFileW a.txt CREATE_NEW again", h);
    h = open_(L"d\\a.txt", GENERIC_READ, 0, OPEN_ALWAYS, 0);
    show_open("CreateFileW a.txt OPEN_ALWAYS", h);
    memset(buf, 0, sizeof buf);
    ReadFile(h, buf, sizeof buf - 1, &n, NULL);
    printf("  read %lu: %s\n", n, buf);
    CloseHandle(h);
    h = open_(L"d\\a.txt", GENERIC_WRITE, 0, CREATE_ALWAYS, 0);
    show_open("CreateFileW a.txt CREATE_ALWAYS", h);
    printf("  size now %lu\n", GetFileSize(h, NULL));
    WriteFile(h, "0123456789", 10, &n, NULL);
    CloseHandle(h);
    h = open_(L"d\\a.txt", GENERIC_READ, 0, TRUNCATE_EXISTING, 0);
    try_open("TRUNCATE_EXISTING without write", h);
    h = open_(L"d\\missing", GENERIC_READ, 0, OPEN_EXISTING, 0);
    try_open("OPEN_EXISTING missing", h);
    h = open_(L"nodir\\missing", GENERIC_READ, 0, OPEN_EXISTING, 0);
    try_open("OPEN_EXISTING in a missing directory", h);
    h = open_(L"d", GENERIC_READ, FILE_SHARE_READ, OPEN_EXISTING, 0);
    try_open("a directory without backup semantics", h);
    h = open_(L"d", GENERIC_READ, FILE_SHARE_READ | FILE_SHARE_WRITE, OPEN_EXISTING,
              FILE_FLAG_BACKUP_SEMANTICS);
    show_open("a directory with backup semantics", h);
    if (h != INVALID_HANDLE_VALUE) {
        SHOW("GetFileInformationByHandle dir", GetFileInformationByHandle(h, &bi));
        printf("  attrs=%lx\n", bi.dwFileAttributes & ~FILE_ATTRIBUTE_NOT_CONTENT_INDEXED);
        CloseHandle(h);
    }

    attrs("GetFileAttributesW d", L"d");
    attrs("GetFileAttributesW a.txt", L"d\\a.txt");
    attrs("GetFileAttributesW missing", L"d\\missing");
    attrs("GetFileAttributesW in a missing directory", L"nodir\\missing");
    WIN32_FILE_ATTRIBUTE_DATA ad;
    SHOW("GetFileAttributesExW a.txt", GetFileAttributesExW(P(L"d\\a.txt"), GetFileExInfoStandard, &ad));
    printf("  attrs=%lx size=%lu\n", ad.dwFileAttributes & ~FILE_ATTRIBUTE_NOT_CONTENT_INDEXED, ad.nFileSizeLow);
    SHOW("SetFileAttributesW read-only", SetFileAttributesW(P(L"d\\a.txt"), FILE_ATTRIBUTE_READONLY));
    attrs("GetFileAttributesW read-only a.txt", L"d\\a.txt");
    h = open_(L"d\\a.txt", GENERIC_WRITE, 0, OPEN_EXISTING, 0);
    try_open("open a read-only file for writing", h);
    SHOW("DeleteFileW read-only", DeleteFileW(P(L"d\\a.txt")));
    SHOW("SetFileAttributesW normal", SetFileAttributesW(P(L"d\\a.txt"), FILE_ATTRIBUTE_NORMAL));
    attrs("GetFileAttributesW a.txt again", L"d\\a.txt");

    put(L"d\\b.txt", "bee");
    put(L"d\\c.log", "sea log");
    list(L"d\\*");
    list(L"d\\*.txt");
    list(L"d\\*.none");
    list(L"nodir\\*");

    SHOW("MoveFileExW a -> b, no replace", MoveFileExW(P(L"d\\a.txt"), P(L"d\\b.txt"), 0));
    SHOW("MoveFileExW a -> b, replace", MoveFileExW(P(L"d\\a.txt"), P(L"d\\b.txt"), MOVEFILE_REPLACE_EXISTING));
    SHOW("MoveFileW c.log -> e.log", MoveFileW(P(L"d\\c.log"), P(L"d\\e.log")));
    SHOW("MoveFileW missing", MoveFileW(P(L"d\\c.log"), P(L"d\\f.log")));
    list(L"d\\*");

    h = open_(L"d\\b.txt", GENERIC_READ, FILE_SHARE_READ, OPEN_EXISTING, 0);
    show_open("open b.txt to read, sharing reads", h);
    h2 = open_(L"d\\b.txt", GENERIC_READ, FILE_SHARE_READ, OPEN_EXISTING, 0);
    show_open("  another reader", h2);
    CloseHandle(h2);
    h2 = open_(L"d\\b.txt", GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, OPEN_EXISTING, 0);
    try_open("  a writer", h2);
    SHOW("  DeleteFileW while open", DeleteFileW(P(L"d\\b.txt")));
    CloseHandle(h);

    h = open_(L"d\\tmp.del", GENERIC_WRITE, 0, CREATE_NEW, FILE_FLAG_DELETE_ON_CLOSE);
    show_open("CreateFileW delete-on-close", h);
    WriteFile(h, "gone", 4, &n, NULL);
    attrs("  exists while open", L"d\\tmp.del");
    CloseHandle(h);
    attrs("  after close", L"d\\tmp.del");

    SHOW("CopyFileW b -> copy", CopyFileW(P(L"d\\b.txt"), P(L"d\\copy.txt"), TRUE));
    SHOW("CopyFileW b -> copy, fail if exists", CopyFileW(P(L"d\\b.txt"), P(L"d\\copy.txt"), TRUE));
    h = open_(L"d\\copy.txt", GENERIC_READ, 0, OPEN_EXISTING, 0);
    memset(buf, 0, sizeof buf);
    ReadFile(h, buf, sizeof buf - 1, &n, NULL);
    printf("copy holds %lu: %s\n", n, buf);
    CloseHandle(h);

    wchar_t full[600];
    wchar_t *part = NULL;
    DWORD len = GetFullPathNameW(P(L"d\\..\\d\\.\\copy.txt"), 600, full, &part);
    printf("GetFullPathNameW -> %s, part %ls\n", len > 0 && wcsstr(full, L"\\d\\copy.txt") ? "ends \\d\\copy.txt" : "?",
           part ? part : L"(none)");

    SHOW("RemoveDirectoryW d (not empty)", RemoveDirectoryW(P(L"d")));
    SHOW("RemoveDirectoryW a file", RemoveDirectoryW(P(L"d\\copy.txt")));
    SHOW("DeleteFileW a directory", DeleteFileW(P(L"d")));
    SHOW("DeleteFileW missing", DeleteFileW(P(L"d\\missing")));
    DeleteFileW(P(L"d\\b.txt"));
    DeleteFileW(P(L"d\\e.log"));
    DeleteFileW(P(L"d\\copy.txt"));
    SHOW("RemoveDirectoryW d (empty)", RemoveDirectoryW(P(L"d")));
    attrs("GetFileAttributesW d after", L"d");
    return 0;
}
