/* A WinSock program that knows nothing of VMMC: a ping-pong and a bulk transfer over TCP, the
 * same protocol as vmmc-sockets/examples/echo_peer.rs, so either end can be either program.
 *
 *   wsping server PORT                 serve connections one at a time, forever (select +
 *                                      accept); a client's first byte picks echo ('E') or
 *                                      sink ('S': count and hash back at end of stream)
 *   wsping ping HOST PORT ROUNDS SIZE  prints "rtt_us X"
 *   wsping bulk HOST PORT MIB          prints "mib_per_s X"
 *
 * Built for Windows with x86_64-w64-mingw32-gcc, linking ws2_32 (WSASend/WSARecv with two
 * buffers each, WSAPoll) or, with -DWSOCK32, wsock32 (WinSock 1.1 calls only); and for Linux
 * with gcc, as the kernel-TCP peer. Exit status 1 with a message on any failure. */
#ifdef _WIN32
#include <winsock2.h>
#include <windows.h>
typedef int socklen_t;
static double now(void)
{
    LARGE_INTEGER f, c;
    QueryPerformanceFrequency(&f);
    QueryPerformanceCounter(&c);
    return (double)c.QuadPart / (double)f.QuadPart;
}
static int last_error(void) { return WSAGetLastError(); }
#define SHUT_WR SD_SEND
#else
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
typedef int SOCKET;
#define INVALID_SOCKET (-1)
#define closesocket close
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
static int last_error(void) { return errno; }
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK (1 << 20)

static void die(const char *what)
{
    fprintf(stderr, "wsping: %s failed (error %d)\n", what, last_error());
    exit(1);
}

static uint8_t pattern(uint64_t i) { return (uint8_t)((i * 31) ^ (i >> 12)); }

static uint64_t fnv(const uint8_t *p, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}
#define FNV_START 0xcbf29ce484222325ULL

/* 0 when all `n` bytes went, -1 otherwise. */
static int try_send_all(SOCKET s, const uint8_t *p, size_t n)
{
    while (n > 0) {
        int k = send(s, (const char *)p, (int)(n > 0x40000000 ? 0x40000000 : n), 0);
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* 0 when all `n` bytes came, -1 otherwise. */
static int try_recv_all(SOCKET s, uint8_t *p, size_t n)
{
    while (n > 0) {
        int k = recv(s, (char *)p, (int)n, 0);
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static void send_all(SOCKET s, const uint8_t *p, size_t n)
{
    if (try_send_all(s, p, n) != 0)
        die("send");
}

static void recv_all(SOCKET s, uint8_t *p, size_t n)
{
    if (try_recv_all(s, p, n) != 0)
        die("recv");
}

/* Receives into two buffers at once where the API allows it (scatter). */
static int recv_some(SOCKET s, uint8_t *buf, size_t n)
{
#if defined(_WIN32) && !defined(WSOCK32)
    WSABUF b[2] = {{(ULONG)(n / 2), (char *)buf}, {(ULONG)(n - n / 2), (char *)buf + n / 2}};
    DWORD got = 0, flags = 0;
    if (WSARecv(s, b, 2, &got, &flags, NULL, NULL) != 0)
        return -1;
    return (int)got;
#else
    return recv(s, (char *)buf, (int)n, 0);
#endif
}

/* Sends from two buffers at once where the API allows it (gather). */
static void send_chunk(SOCKET s, const uint8_t *buf, size_t n)
{
#if defined(_WIN32) && !defined(WSOCK32)
    size_t done = 0;
    while (done < n) {
        size_t left = n - done, half = left / 2;
        WSABUF b[2] = {{(ULONG)half, (char *)buf + done}, {(ULONG)(left - half), (char *)buf + done + half}};
        DWORD sent = 0;
        if (WSASend(s, b, 2, &sent, 0, NULL, NULL) != 0 || sent == 0)
            die("WSASend");
        done += sent;
    }
#else
    send_all(s, buf, n);
#endif
}

/* Waits until `s` is readable (WSAPoll where there is one, select elsewhere), then checks
 * that FIONREAD agrees that something is there. */
static void wait_readable(SOCKET s)
{
#if defined(_WIN32) && !defined(WSOCK32)
    WSAPOLLFD p = {s, POLLRDNORM, 0};
    int n = WSAPoll(&p, 1, 10000);
    if (n != 1 || !(p.revents & POLLRDNORM))
        die("WSAPoll");
#else
    fd_set r;
    FD_ZERO(&r);
    FD_SET(s, &r);
    struct timeval tv = {10, 0};
    if (select((int)s + 1, &r, NULL, NULL, &tv) != 1 || !FD_ISSET(s, &r))
        die("select");
#endif
#ifdef _WIN32
    u_long avail = 0;
    if (ioctlsocket(s, FIONREAD, &avail) != 0 || avail == 0)
        die("ioctlsocket(FIONREAD)");
#endif
}

/* One client; a client that breaks off costs only its connection (the server goes on). */
static void serve_one(SOCKET c, uint8_t *buf)
{
    uint8_t kind;
    uint64_t total = 0, h = FNV_START;
    if (try_recv_all(c, &kind, 1) != 0)
        goto out;
    for (;;) {
        int n = kind == 'S' ? recv_some(c, buf, CHUNK) : recv(c, (char *)buf, CHUNK, 0);
        if (n < 0)
            goto out;
        if (n == 0)
            break;
        if (kind == 'E') {
            if (try_send_all(c, buf, (size_t)n) != 0)
                goto out;
        } else {
            h = fnv(buf, (size_t)n, h);
            total += (uint64_t)n;
        }
    }
    if (kind == 'S') {
        uint8_t answer[16];
        for (int i = 0; i < 8; i++) {
            answer[i] = (uint8_t)(total >> (8 * i));
            answer[8 + i] = (uint8_t)(h >> (8 * i));
        }
        try_send_all(c, answer, 16);
    }
out:
    closesocket(c);
}

static void server(int port)
{
    SOCKET l = socket(AF_INET, SOCK_STREAM, 0);
    if (l == INVALID_SOCKET)
        die("socket");
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, (const char *)&one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0)
        die("bind");
    if (listen(l, 8) != 0)
        die("listen");
    printf("listening %d\n", port);
    fflush(stdout);
    uint8_t *buf = malloc(CHUNK);
    for (;;) {
        fd_set r;
        FD_ZERO(&r);
        FD_SET(l, &r);
        struct timeval tv = {5, 0};
        int n = select((int)l + 1, &r, NULL, NULL, &tv);
        if (n < 0)
            die("select");
        if (n == 0 || !FD_ISSET(l, &r))
            continue;
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        SOCKET c = accept(l, (struct sockaddr *)&peer, &len);
        if (c == INVALID_SOCKET)
            die("accept");
        serve_one(c, buf);
    }
}

static SOCKET dial(const char *host, int port)
{
    SOCKET s = socket(AF_INET, SOCK_STREAM, 0);
    if (s == INVALID_SOCKET)
        die("socket");
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, (const char *)&one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = inet_addr(host);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0)
        die("connect");
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    if (getpeername(s, (struct sockaddr *)&peer, &len) != 0 || peer.sin_port != a.sin_port)
        die("getpeername");
    return s;
}

static int ping(const char *host, int port, int rounds, int size)
{
    SOCKET s = dial(host, port);
    uint8_t *msg = malloc((size_t)size), *back = malloc((size_t)size);
    for (int i = 0; i < size; i++)
        msg[i] = pattern((uint64_t)i);
    send_all(s, (const uint8_t *)"E", 1);
    send_all(s, msg, (size_t)size);
    recv_all(s, back, (size_t)size);
    double t0 = now();
    for (int r = 0; r < rounds; r++) {
        send_all(s, msg, (size_t)size);
        /* One round in eight waits first, as an event loop would. */
        if (r % 8 == 0)
            wait_readable(s);
        recv_all(s, back, (size_t)size);
    }
    double t = now() - t0;
    if (memcmp(msg, back, (size_t)size) != 0) {
        fprintf(stderr, "wsping: the echo differs from what was sent\n");
        return 1;
    }
    printf("rtt_us %.2f\n", t * 1e6 / (rounds > 0 ? rounds : 1));
    closesocket(s);
    return 0;
}

static int bulk(const char *host, int port, int mib)
{
    SOCKET s = dial(host, port);
    uint8_t *chunk = malloc(CHUNK);
    for (uint64_t i = 0; i < CHUNK; i++)
        chunk[i] = pattern(i);
    send_all(s, (const uint8_t *)"S", 1);
    uint64_t h = FNV_START;
    double t0 = now();
    for (int i = 0; i < mib; i++) {
        send_chunk(s, chunk, CHUNK);
        h = fnv(chunk, CHUNK, h);
    }
    if (shutdown(s, SHUT_WR) != 0)
        die("shutdown");
    uint8_t answer[16];
    recv_all(s, answer, 16);
    double t = now() - t0;
    uint64_t total = 0, theirs = 0;
    for (int i = 7; i >= 0; i--) {
        total = (total << 8) | answer[i];
        theirs = (theirs << 8) | answer[8 + i];
    }
    if (total != (uint64_t)mib * CHUNK || theirs != h) {
        fprintf(stderr, "wsping: the sink got %llu bytes, not what was sent\n",
                (unsigned long long)total);
        return 1;
    }
    printf("mib_per_s %.1f\n", mib / t);
    closesocket(s);
    return 0;
}

int main(int argc, char **argv)
{
#ifdef _WIN32
    WSADATA wsa;
    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0)
        die("WSAStartup");
#endif
    if (argc == 3 && strcmp(argv[1], "server") == 0)
        server(atoi(argv[2]));
    if (argc == 6 && strcmp(argv[1], "ping") == 0)
        return ping(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    if (argc == 5 && strcmp(argv[1], "bulk") == 0)
        return bulk(argv[2], atoi(argv[3]), atoi(argv[4]));
    fprintf(stderr, "usage: wsping server PORT | ping HOST PORT ROUNDS SIZE | bulk HOST PORT MIB\n");
    return 2;
}
