/* Faults inside hot (translated) code: a loop sums a buffer whose end
 * runs into a PROT_NONE page, after enough rounds that the loop is
 * translated. The SIGSEGV handler reports si_addr relative to the buffer,
 * the faulting EIP relative to the loop function, and registers the loop
 * keeps live, then skips the rest by siglongjmp. Same output natively. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

static sigjmp_buf env;
static unsigned char *buf;
static volatile unsigned long fault_off, fault_eip;

__attribute__((noinline)) static unsigned sum(const unsigned *p, unsigned n) {
    unsigned s = 0;
    for (unsigned i = 0; i < n; i++) s += p[i] ^ i;
    return s;
}

static void on_segv(int sig, siginfo_t *si, void *ucv) {
    ucontext_t *uc = ucv;
    (void)sig;
    fault_off = (unsigned long)((unsigned char *)si->si_addr - buf);
    fault_eip = (unsigned long)uc->uc_mcontext.gregs[REG_EIP];
    siglongjmp(env, 1);
}

int main(void) {
    buf = mmap(0, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) return 1;
    mprotect(buf + 2 * 4096, 4096, PROT_NONE);
    memset(buf, 7, 2 * 4096);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, 0);
    unsigned total = 0;
    for (int r = 0; r < 2000; r++) total += sum((const unsigned *)buf, 2048);
    for (unsigned extra = 1; extra <= 3; extra++) {
        if (sigsetjmp(env, 1) == 0) {
            total += sum((const unsigned *)buf, 2048 + extra * 5);
            printf("no fault?\n");
        } else {
            long rel = (long)(fault_eip - (unsigned long)(void *)sum);
            printf("fault %u: offset %lu, eip sum+%ld\n", extra, fault_off, rel);
        }
    }
    printf("total %u\n", total);
    return 0;
}
