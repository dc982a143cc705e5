/* The socket calls the preload takes, used as an ordinary program uses them, checked against
 * what the kernel's sockets do: the test runs this on kernel TCP and under vmmc-run, and
 * both runs must print "ok". Usage: calls PORT */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(c)                                                                        \
    do {                                                                                \
        if (!(c)) {                                                                     \
            fprintf(stderr, "calls: line %d: %s failed (errno %d %s)\n", __LINE__, #c,  \
                    errno, strerror(errno));                                            \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

static struct sockaddr_in addr_of(int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int client(int port) {
    struct sockaddr_in a = addr_of(port);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(c >= 0);
    int one = 1;
    CHECK(setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    CHECK(connect(c, (struct sockaddr *)&a, sizeof a) == 0);
    struct sockaddr_in p;
    socklen_t pl = sizeof p;
    CHECK(getpeername(c, (struct sockaddr *)&p, &pl) == 0);
    CHECK(p.sin_port == htons(port));
    struct iovec iov[2] = {{"hello ", 6}, {"world", 5}};
    CHECK(writev(c, iov, 2) == 11);
    char buf[12] = {0};
    CHECK(recv(c, buf, 11, MSG_WAITALL) == 11);
    CHECK(memcmp(buf, "HELLO WORLD", 11) == 0);
    /* End of stream after the server closes. */
    CHECK(read(c, buf, 1) == 0);
    CHECK(close(c) == 0);
    return 0;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    int port = atoi(argv[1]);
    struct sockaddr_in a = addr_of(port);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(l >= 0);
    int one = 1;
    CHECK(setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
    CHECK(bind(l, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(l, 16) == 0);
    struct sockaddr_in n;
    socklen_t nl = sizeof n;
    CHECK(getsockname(l, (struct sockaddr *)&n, &nl) == 0);
    CHECK(n.sin_port == htons(port));
    /* Nothing to accept yet: poll says so, a non-blocking accept says EAGAIN. */
    struct pollfd pl = {l, POLLIN, 0};
    CHECK(poll(&pl, 1, 0) == 0);
    int fl = fcntl(l, F_GETFL);
    CHECK(fcntl(l, F_SETFL, fl | O_NONBLOCK) == 0);
    CHECK(accept(l, NULL, NULL) == -1 && (errno == EAGAIN || errno == EWOULDBLOCK));
    CHECK(fcntl(l, F_SETFL, fl) == 0);

    pid_t kid = fork();
    CHECK(kid >= 0);
    if (kid == 0)
        return client(port);

    /* The listener stays the parent's. */
    CHECK(poll(&pl, 1, 10000) == 1 && (pl.revents & POLLIN));
    struct sockaddr_in peer;
    socklen_t peerl = sizeof peer;
    int s = accept4(l, (struct sockaddr *)&peer, &peerl, SOCK_CLOEXEC);
    CHECK(s >= 0);
    CHECK(peer.sin_family == AF_INET);
    CHECK(fcntl(s, F_GETFD) & FD_CLOEXEC);
    int err = -1;
    socklen_t el = sizeof err;
    CHECK(getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0);
    int type = 0;
    socklen_t tl = sizeof type;
    CHECK(getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_STREAM);

    /* More descriptors for the same socket; closing one leaves the others working. */
    int d = dup(s);
    int e = fcntl(s, F_DUPFD, 100);
    CHECK(d >= 0 && e >= 100);
    CHECK(dup2(s, 200) == 200);
    CHECK(close(s) == 0);
    CHECK(close(200) == 0);

    /* epoll over the socket and a pipe (a kernel descriptor) together. */
    int pp[2];
    CHECK(pipe(pp) == 0);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = 7};
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, d, &ev) == 0);
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, d, &ev) == -1 && errno == EEXIST);
    struct epoll_event pev = {.events = EPOLLIN, .data.u64 = 9};
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, pp[0], &pev) == 0);
    struct epoll_event out[4];
    int k = epoll_wait(ep, out, 4, 10000);
    CHECK(k == 1 && out[0].data.u64 == 7 && (out[0].events & EPOLLIN));
    /* Wait until all 11 bytes are there (two writes may arrive apart). */
    int avail = 0;
    for (int i = 0; i < 1000 && avail < 11; i++) {
        CHECK(ioctl(d, FIONREAD, &avail) == 0);
        if (avail < 11)
            usleep(1000);
    }
    CHECK(avail == 11);
    char peek[5];
    CHECK(recv(d, peek, 5, MSG_PEEK) == 5 && memcmp(peek, "hello", 5) == 0);
    char b1[6], b2[5];
    struct iovec iov[2] = {{b1, 6}, {b2, 5}};
    CHECK(readv(d, iov, 2) == 11);
    CHECK(memcmp(b1, "hello ", 6) == 0 && memcmp(b2, "world", 5) == 0);
    /* Nothing left: non-blocking reads say EAGAIN, through FIONBIO on another descriptor. */
    int on = 1;
    CHECK(ioctl(e, FIONBIO, &on) == 0);
    CHECK(fcntl(d, F_GETFL) & O_NONBLOCK);
    char x;
    CHECK(recv(d, &x, 1, 0) == -1 && errno == EAGAIN);
    /* One shot spent: the pipe alone wakes the next wait. */
    CHECK(epoll_wait(ep, out, 4, 50) == 0);
    CHECK(write(pp[1], "p", 1) == 1);
    k = epoll_wait(ep, out, 4, 10000);
    CHECK(k == 1 && out[0].data.u64 == 9);
    /* select with the socket writable and the pipe readable. */
    fd_set rs, ws;
    FD_ZERO(&rs);
    FD_ZERO(&ws);
    FD_SET(pp[0], &rs);
    FD_SET(d, &ws);
    struct timeval tv = {5, 0};
    CHECK(select((d > pp[0] ? d : pp[0]) + 1, &rs, &ws, NULL, &tv) == 2);
    CHECK(FD_ISSET(pp[0], &rs) && FD_ISSET(d, &ws));

    /* A socket closed by close_range leaves no trace: a pipe that gets its number is a pipe. */
    int c2 = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(c2 >= 0);
    CHECK(connect(c2, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(close_range(c2, c2, 0) == 0);
    int q[2];
    CHECK(pipe(q) == 0);
    CHECK(q[0] == c2);
    CHECK(write(q[1], "z", 1) == 1);
    char z = 0;
    CHECK(read(q[0], &z, 1) == 1 && z == 'z');
    CHECK(close(q[0]) == 0 && close(q[1]) == 0);

    CHECK(send(e, "HELLO ", 6, MSG_NOSIGNAL) == 6);
    CHECK(write(d, "WORLD", 5) == 5);
    CHECK(shutdown(d, SHUT_WR) == 0);
    CHECK(close(d) == 0 && close(e) == 0 && close(ep) == 0 && close(l) == 0);
    int status = 0;
    CHECK(waitpid(kid, &status, 0) == kid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    printf("ok\n");
    return 0;
}
