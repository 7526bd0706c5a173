/* Signals: SA_SIGINFO handler editing the ucontext (EIP, EAX), a plain
 * handler, sigaltstack, SA_RESTART vs EINTR, alarm + pause, sigsuspend,
 * masks, SA_NODEFER/SA_RESETHAND, sigqueue values, raise of a default. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/ucontext.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int got, got_code, got_val, depth, maxdepth;
static char *alt_lo, *alt_hi;
static volatile int on_alt;

static void plain(int sig) { got = sig; }

static void info_handler(int sig, siginfo_t *si, void *ucv)
{
    got = sig;
    got_code = si->si_code;
    got_val = si->si_value.sival_int;
    char here;
    on_alt = (&here >= alt_lo && &here < alt_hi);
    (void)ucv;
}

/* Skips the faulting instruction (ud2, 2 bytes) and sets EAX. */
static void ill_handler(int sig, siginfo_t *si, void *ucv)
{
    ucontext_t *uc = ucv;
    got = sig;
    got_code = si->si_code;
    uc->uc_mcontext.gregs[REG_EIP] += 2;
    uc->uc_mcontext.gregs[REG_EAX] = 0x1234;
}

static void nested(int sig)
{
    depth++;
    if (depth > maxdepth)
        maxdepth = depth;
    if (depth < 3)
        raise(sig);
    depth--;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);

    /* 1. plain handler via signal() and raise */
    signal(SIGUSR1, plain);
    raise(SIGUSR1);
    printf("plain: got=%d\n", got);

    /* 2. SA_SIGINFO with sigqueue value */
    sa.sa_sigaction = info_handler;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR2, &sa, NULL);
    union sigval v = { .sival_int = 77 };
    sigqueue(getpid(), SIGUSR2, v);
    printf("siginfo: got=%d code=%d val=%d\n", got, got_code, got_val);

    /* 3. ucontext editing: skip ud2 and change EAX */
    sa.sa_sigaction = ill_handler;
    sigaction(SIGILL, &sa, NULL);
    int eax;
    __asm__ volatile("mov $1, %%eax\n\tud2\n\t" : "=a"(eax));
    printf("ucontext: got=%d code=%d eax=%#x\n", got, got_code, eax);

    /* 4. sigaltstack */
    stack_t ss = { .ss_sp = malloc(65536), .ss_size = 65536, .ss_flags = 0 };
    alt_lo = ss.ss_sp;
    alt_hi = alt_lo + 65536;
    sigaltstack(&ss, NULL);
    sa.sa_sigaction = info_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGUSR2, &sa, NULL);
    raise(SIGUSR2);
    printf("altstack: on_alt=%d\n", on_alt);
    stack_t cur;
    sigaltstack(NULL, &cur);
    printf("altstack flags=%d size=%d\n", cur.ss_flags, (int)cur.ss_size);

    /* 5. masks: blocked signal stays pending until unblocked */
    sigset_t m, old, pend;
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    sigprocmask(SIG_BLOCK, &m, &old);
    got = 0;
    raise(SIGUSR1);
    sigpending(&pend);
    printf("blocked: got=%d pending=%d\n", got, sigismember(&pend, SIGUSR1));
    sigprocmask(SIG_SETMASK, &old, NULL);
    printf("unblocked: got=%d\n", got);

    /* 6. SA_NODEFER nesting and SA_RESETHAND */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = nested;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGUSR1, &sa, NULL);
    depth = maxdepth = 0;
    raise(SIGUSR1);
    printf("nodefer: maxdepth=%d\n", maxdepth);
    sa.sa_handler = plain;
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    sigaction(SIGUSR1, NULL, &sa);
    printf("resethand: now default=%d\n", sa.sa_handler == SIG_DFL);

    /* 7. SA_RESTART vs EINTR on a pipe read, interrupted by an itimer */
    int p[2];
    pipe(p);
    struct itimerval it = { .it_value = { .tv_usec = 50000 } };
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = plain;
    sa.sa_flags = 0;
    sigaction(SIGALRM, &sa, NULL);
    setitimer(ITIMER_REAL, &it, NULL);
    char c;
    ssize_t r = read(p[0], &c, 1);
    printf("no SA_RESTART: read=%zd errno=%s\n", r, r < 0 && errno == EINTR ? "EINTR" : "other");
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    pid_t child = fork();
    if (child == 0) {
        usleep(200000);
        write(p[1], "z", 1);
        _exit(0);
    }
    setitimer(ITIMER_REAL, &it, NULL);
    got = 0;
    r = read(p[0], &c, 1);
    printf("SA_RESTART: read=%zd c=%c got=%d\n", r, c, got);
    waitpid(child, NULL, 0);

    /* 8. alarm + pause */
    got = 0;
    alarm(1);
    pause();
    printf("pause: got=%d\n", got);

    /* 9. sigsuspend */
    sigemptyset(&m);
    sigaddset(&m, SIGUSR1);
    sa.sa_handler = plain;
    sa.sa_flags = 0;
    sigaction(SIGUSR1, &sa, NULL);
    sigprocmask(SIG_BLOCK, &m, &old);
    child = fork();
    if (child == 0) {
        kill(getppid(), SIGUSR1);
        _exit(0);
    }
    got = 0;
    sigset_t waitmask;
    sigprocmask(0, NULL, &waitmask);
    sigdelset(&waitmask, SIGUSR1);
    while (!got)
        sigsuspend(&waitmask);
    sigset_t after;
    sigprocmask(0, NULL, &after);
    printf("sigsuspend: got=%d mask restored=%d\n", got, sigismember(&after, SIGUSR1));
    waitpid(child, NULL, 0);
    sigprocmask(SIG_SETMASK, &old, NULL);

    /* 10. sigtimedwait */
    sigprocmask(SIG_BLOCK, &m, NULL);
    raise(SIGUSR1);
    siginfo_t si;
    struct timespec ts = { 1, 0 };
    int s = sigtimedwait(&m, &si, &ts);
    printf("sigtimedwait: %d code=%d\n", s, si.si_code);
    ts.tv_sec = 0;
    ts.tv_nsec = 1000000;
    s = sigtimedwait(&m, &si, &ts);
    printf("sigtimedwait timeout: %d errno=%s\n", s, errno == EAGAIN ? "EAGAIN" : "other");

    /* 11. ignored signal */
    signal(SIGUSR2, SIG_IGN);
    raise(SIGUSR2);
    printf("ignored ok\n");
    fflush(stdout);

    /* 12. death by a default action */
    signal(SIGTERM, SIG_DFL);
    raise(SIGTERM);
    printf("not reached\n");
    return 0;
}
