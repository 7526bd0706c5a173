/* Bad arguments from the guest: unmapped or read-only buffers, bad path
 * pointers, huge counts. Each call must fail with the native errno (and
 * never take the emulator down). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define BAD ((void *)0xdead0000)
#define T(name, expr) do { errno = 0; long r_ = (long)(expr); printf("%-12s r=%ld errno=%d\n", name, r_, r_ < 0 ? errno : 0); } while (0)

int main(void)
{
    int p[2];
    pipe(p);
    write(p[1], "abcdef", 6);
    char *ro = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    T("read bad", syscall(SYS_read, p[0], BAD, 4));
    T("read ro", syscall(SYS_read, p[0], ro, 4));
    T("write bad", syscall(SYS_write, p[1], BAD, 4));
    T("write wrap", syscall(SYS_write, p[1], (void *)0xfffff000, 0x2000));
    T("open bad", syscall(SYS_open, BAD, O_RDONLY));
    T("stat64 bad", syscall(SYS_stat64, "/", BAD));
    T("stat64 path", syscall(SYS_stat64, BAD, ro));
    struct iovec iov = { BAD, 4 };
    T("readv bad", syscall(SYS_readv, p[0], &iov, 1));
    T("readv iov", syscall(SYS_readv, p[0], BAD, 1));
    T("readv cnt", syscall(SYS_readv, p[0], &iov, 100000));
    T("sigaction", syscall(SYS_rt_sigaction, SIGUSR1, BAD, NULL, 8));
    T("sigact sz", syscall(SYS_rt_sigaction, SIGUSR1, NULL, NULL, 4));
    T("sigaction kill", syscall(SYS_rt_sigaction, SIGKILL, NULL, NULL, 8));
    T("sigaction 99", syscall(SYS_rt_sigaction, 99, NULL, NULL, 8));
    T("poll bad", syscall(SYS_poll, BAD, 1, 0));
    T("select nfds", syscall(SYS__newselect, -1, NULL, NULL, NULL, NULL));
    T("munmap unal", syscall(SYS_munmap, 0x1001, 4096));
    T("mprotect none", syscall(SYS_mprotect, 0x10000000, 4096, PROT_READ));
    T("mmap len0", syscall(SYS_mmap2, 0, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    T("mmap flags", syscall(SYS_mmap2, 0, 4096, PROT_READ, MAP_ANONYMOUS, -1, 0));
    T("brk low", syscall(SYS_brk, 0x1000) == syscall(SYS_brk, 0));
    T("getcwd bad", syscall(SYS_getcwd, BAD, 100));
    T("uname bad", syscall(SYS_uname, BAD));
    T("clock bad", syscall(SYS_clock_gettime, 0, BAD));
    T("nanosleep bad", syscall(SYS_nanosleep, BAD, NULL));
    T("futex unal", syscall(SYS_futex, (char *)ro + 1, 0, 0, NULL, NULL, 0));
    T("pipe bad", syscall(SYS_pipe, BAD));
    T("execve bad", syscall(SYS_execve, BAD, NULL, NULL));
    T("unknown 999", syscall(999));
    T("sigaltstack", syscall(SYS_sigaltstack, BAD, NULL));
    T("settls bad", syscall(SYS_set_thread_area, BAD));
    printf("survived\n");
    return 0;
}
