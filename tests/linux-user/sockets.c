/* Sockets: socketpair with SCM_RIGHTS fd passing, a TCP echo over the
 * loopback between two processes, UDP, getsockname/getpeername, options. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static void pass_fd(void)
{
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    int p[2];
    pipe(p);
    write(p[1], "through fd", 10);
    char cbuf[CMSG_SPACE(sizeof(int))];
    memset(cbuf, 0, sizeof cbuf);
    struct iovec iov = { "M", 1 };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &p[0], sizeof(int));
    printf("sendmsg=%zd\n", sendmsg(sv[0], &mh, 0));
    char rb[4];
    char rc[CMSG_SPACE(sizeof(int))];
    struct iovec riov = { rb, sizeof rb };
    struct msghdr rm = { .msg_iov = &riov, .msg_iovlen = 1, .msg_control = rc, .msg_controllen = sizeof rc };
    printf("recvmsg=%zd\n", recvmsg(sv[1], &rm, 0));
    struct cmsghdr *rcm = CMSG_FIRSTHDR(&rm);
    int fd = -1;
    if (rcm && rcm->cmsg_type == SCM_RIGHTS)
        memcpy(&fd, CMSG_DATA(rcm), sizeof fd);
    char got[16] = { 0 };
    read(fd, got, 10);
    printf("fd passed: %s\n", got);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    pass_fd();
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bind(ls, (struct sockaddr *)&a, sizeof a);
    listen(ls, 4);
    socklen_t al = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &al);
    printf("bound port nonzero=%d len=%d\n", a.sin_port != 0, al);
    int v = 0;
    socklen_t vl = sizeof v;
    getsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &v, &vl);
    printf("reuseaddr=%d\n", v);
    pid_t c = fork();
    if (c == 0) {
        int s = accept(ls, NULL, NULL);
        char b[64];
        ssize_t n;
        while ((n = recv(s, b, sizeof b, 0)) > 0)
            send(s, b, n, 0);
        close(s);
        _exit(0);
    }
    close(ls);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    printf("connect=%d\n", connect(s, (struct sockaddr *)&a, sizeof a));
    struct timeval tv = { 2, 0 };
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct timeval tv2;
    socklen_t tl = sizeof tv2;
    getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv2, &tl);
    printf("rcvtimeo=%ld\n", (long)tv2.tv_sec);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const char *msgs[] = { "ping", "echo this line", "last" };
    for (int i = 0; i < 3; i++) {
        send(s, msgs[i], strlen(msgs[i]), 0);
        char b[64] = { 0 };
        size_t got = 0;
        while (got < strlen(msgs[i])) {
            ssize_t n = recv(s, b + got, sizeof b - 1 - got, 0);
            if (n <= 0)
                break;
            got += n;
        }
        printf("echo: %s\n", b);
    }
    struct sockaddr_in peer;
    socklen_t pl = sizeof peer;
    getpeername(s, (struct sockaddr *)&peer, &pl);
    printf("peer port match=%d\n", peer.sin_port == a.sin_port);
    shutdown(s, SHUT_WR);
    char b[4];
    printf("after shutdown recv=%zd\n", recv(s, b, sizeof b, 0));
    close(s);
    int st;
    waitpid(c, &st, 0);
    printf("server exit=%d\n", WEXITSTATUS(st));

    int u1 = socket(AF_INET, SOCK_DGRAM, 0), u2 = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in ua = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bind(u2, (struct sockaddr *)&ua, sizeof ua);
    al = sizeof ua;
    getsockname(u2, (struct sockaddr *)&ua, &al);
    sendto(u1, "datagram", 8, 0, (struct sockaddr *)&ua, sizeof ua);
    char d[16] = { 0 };
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    printf("recvfrom=%zd %s family=%d\n", recvfrom(u2, d, sizeof d, 0, (struct sockaddr *)&from, &fl), d, from.sin_family);
    return 0;
}
