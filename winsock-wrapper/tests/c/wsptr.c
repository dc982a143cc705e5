/* The pointer-based requests of the wrapper (winsock_wrapper::ioctl), from C: a program that
 * does know about VMMC. Connects to HOST:PORT (routed to an echo service), writes "E" and
 * MESSAGE straight into the peer's ring through SIO_VMMC_GET_SEND_POINTER/COMMIT_SEND, then
 * reads the echo in place through SIO_VMMC_GET_RECV_POINTER/RELEASE_RECV. Prints "ok" or says
 * what failed and exits 1.
 *
 *   wsptr HOST PORT MESSAGE */
#include <winsock2.h>
#include <windows.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIO_VMMC_GET_SEND_POINTER 0xD8005601u
#define SIO_VMMC_COMMIT_SEND 0xD8005602u
#define SIO_VMMC_GET_RECV_POINTER 0xD8005603u
#define SIO_VMMC_RELEASE_RECV 0xD8005604u

static void die(const char *what)
{
    fprintf(stderr, "wsptr: %s failed (error %d)\n", what, WSAGetLastError());
    exit(1);
}

/* One request: a 64-bit word in, up to two 64-bit words out. The pointer requests never
 * wait: on WSAEWOULDBLOCK (no data, no room yet) wait in WSAPoll and ask again. */
static void request(SOCKET s, DWORD code, uint64_t in, uint64_t out[2], const char *what)
{
    for (;;) {
        DWORD got = 0;
        out[0] = out[1] = 0;
        if (WSAIoctl(s, code, &in, sizeof in, out, 2 * sizeof(uint64_t), &got, NULL, NULL) == 0)
            return;
        if (WSAGetLastError() != WSAEWOULDBLOCK)
            die(what);
        WSAPOLLFD p = {s, code == SIO_VMMC_GET_SEND_POINTER ? POLLWRNORM : POLLRDNORM, 0};
        if (WSAPoll(&p, 1, 10000) != 1)
            die("WSAPoll");
    }
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: wsptr HOST PORT MESSAGE\n");
        return 2;
    }
    WSADATA wsa;
    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0)
        die("WSAStartup");
    SOCKET s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(argv[2]));
    a.sin_addr.s_addr = inet_addr(argv[1]);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0)
        die("connect");
    const char *msg = argv[3];
    size_t n = strlen(msg);
    uint64_t out[2];

    request(s, SIO_VMMC_GET_SEND_POINTER, 1 + n, out, "SIO_VMMC_GET_SEND_POINTER");
    if (out[1] < 1 + n) {
        fprintf(stderr, "wsptr: a send pointer for %llu bytes, not %zu\n",
                (unsigned long long)out[1], 1 + n);
        return 1;
    }
    char *at = (char *)(uintptr_t)out[0];
    at[0] = 'E';
    memcpy(at + 1, msg, n);
    request(s, SIO_VMMC_COMMIT_SEND, 1 + n, out, "SIO_VMMC_COMMIT_SEND");

    size_t seen = 0;
    char *back = malloc(n);
    while (seen < n) {
        request(s, SIO_VMMC_GET_RECV_POINTER, 0, out, "SIO_VMMC_GET_RECV_POINTER");
        size_t len = (size_t)out[1];
        if (len == 0) {
            fprintf(stderr, "wsptr: the stream ended after %zu bytes\n", seen);
            return 1;
        }
        if (len > n - seen)
            len = n - seen;
        /* The peer could still write these bytes: copy, then check the copy. */
        memcpy(back + seen, (const char *)(uintptr_t)out[0], len);
        request(s, SIO_VMMC_RELEASE_RECV, len, out, "SIO_VMMC_RELEASE_RECV");
        seen += len;
    }
    if (memcmp(back, msg, n) != 0) {
        fprintf(stderr, "wsptr: the echo differs from what was sent\n");
        return 1;
    }
    /* On a socket the wrapper does not route, the requests are not known. */
    SOCKET plain = socket(AF_INET, SOCK_STREAM, 0);
    DWORD got = 0;
    uint64_t in = 1;
    if (WSAIoctl(plain, SIO_VMMC_GET_RECV_POINTER, &in, sizeof in, out, sizeof out, &got, NULL,
                 NULL) == 0) {
        fprintf(stderr, "wsptr: a system socket took a VMMC request\n");
        return 1;
    }
    printf("ok\n");
    closesocket(s);
    return 0;
}
