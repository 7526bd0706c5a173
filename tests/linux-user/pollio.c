/* Pipes and readiness: pipe2, poll, select, pselect, epoll, eventfd,
 * and a pipe between two processes. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
    int p[2];
    pipe2(p, O_CLOEXEC);
    printf("cloexec=%d\n", fcntl(p[0], F_GETFD) & FD_CLOEXEC);
    struct pollfd pf[2] = { { p[0], POLLIN, 0 }, { p[1], POLLOUT, 0 } };
    printf("poll empty: n=%d in=%d out=%d\n", poll(pf, 2, 0), pf[0].revents & POLLIN, !!(pf[1].revents & POLLOUT));
    write(p[1], "abc", 3);
    printf("poll data: n=%d in=%d\n", poll(pf, 1, 100), pf[0].revents & POLLIN);
    int avail;
    ioctl(p[0], FIONREAD, &avail);
    printf("fionread=%d\n", avail);

    fd_set rs;
    FD_ZERO(&rs);
    FD_SET(p[0], &rs);
    struct timeval tv = { 0, 1000 };
    printf("select: n=%d set=%d\n", select(p[0] + 1, &rs, NULL, NULL, &tv), FD_ISSET(p[0], &rs));
    char buf[8] = { 0 };
    read(p[0], buf, 3);
    FD_ZERO(&rs);
    FD_SET(p[0], &rs);
    struct timespec ts = { 0, 20000000 };
    printf("pselect timeout: n=%d\n", pselect(p[0] + 1, &rs, NULL, NULL, &ts, NULL));

    /* a high fd in select */
    int hi = dup2(p[0], 70);
    write(p[1], "x", 1);
    FD_ZERO(&rs);
    FD_SET(hi, &rs);
    printf("select fd70: n=%d\n", select(hi + 1, &rs, NULL, NULL, NULL));
    read(hi, buf, 1);

    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0x1122334455667788ULL };
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
    struct epoll_event out[4];
    printf("epoll empty: %d\n", epoll_wait(ep, out, 4, 10));
    write(p[1], "y", 1);
    int n = epoll_wait(ep, out, 4, 1000);
    printf("epoll: n=%d events=%d data ok=%d\n", n, out[0].events, out[0].data.u64 == 0x1122334455667788ULL);
    read(p[0], buf, 1);

    int efd = eventfd(3, 0);
    uint64_t v;
    read(efd, &v, 8);
    printf("eventfd=%llu\n", (unsigned long long)v);
    v = 5;
    write(efd, &v, 8);
    ev.events = EPOLLIN;
    ev.data.fd = efd;
    epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
    n = epoll_wait(ep, out, 4, 1000);
    printf("epoll eventfd: n=%d fd ok=%d\n", n, out[0].data.fd == efd);

    pid_t c = fork();
    if (c == 0) {
        close(p[0]);
        for (int i = 0; i < 5; i++) {
            char m[16];
            int k = snprintf(m, sizeof m, "line %d\n", i);
            write(p[1], m, k);
            usleep(10000);
        }
        _exit(0);
    }
    close(p[1]);
    char all[128] = { 0 };
    int off = 0, k;
    while ((k = read(p[0], all + off, sizeof all - 1 - off)) > 0)
        off += k;
    printf("from child:\n%s", all);
    int st;
    waitpid(c, &st, 0);
    printf("EOF read=%d\n", k);
    return 0;
}
