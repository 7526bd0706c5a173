/* mmap/mprotect/munmap/mremap/brk and the faults they cause: a SIGSEGV
 * handler reads si_addr and si_code, then siglongjmps back. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static sigjmp_buf env;
static volatile void *fault_addr;
static volatile int fault_code, fault_sig;
static char *base;

static void handler(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    fault_sig = sig;
    fault_addr = si->si_addr;
    fault_code = si->si_code;
    siglongjmp(env, 1);
}

static void try_write(const char *what, volatile char *p)
{
    fault_sig = 0;
    if (sigsetjmp(env, 1) == 0) {
        *p = 1;
        printf("%s: write ok\n", what);
    } else {
        printf("%s: sig=%d code=%d offset=%ld\n", what, fault_sig, fault_code,
               (long)((char *)fault_addr - base));
    }
}

static void try_read(const char *what, volatile char *p)
{
    fault_sig = 0;
    if (sigsetjmp(env, 1) == 0) {
        volatile char c = *p;
        (void)c;
        printf("%s: read ok\n", what);
    } else {
        printf("%s: sig=%d code=%d offset=%ld\n", what, fault_sig, fault_code,
               (long)((char *)fault_addr - base));
    }
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);

    base = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("mmap ok=%d aligned=%d zero=%d\n", base != MAP_FAILED, ((uintptr_t)base & 4095) == 0, base[100] == 0);
    strcpy(base, "data");
    try_write("rw page", base + 10);
    mprotect(base + 4096, 4096, PROT_READ);
    try_write("ro page", base + 4096 + 123);
    try_read("ro page", base + 4096 + 5);
    mprotect(base + 2 * 4096, 4096, PROT_NONE);
    try_read("none page", base + 2 * 4096 + 7);
    munmap(base + 3 * 4096, 4096);
    try_read("unmapped page", base + 3 * 4096 + 9);
    try_write("unmapped page", base + 3 * 4096);
    mprotect(base + 4096, 4096, PROT_READ | PROT_WRITE);
    try_write("rw again", base + 4096 + 123);
    printf("sigsegv blocked after longjmp? %d\n", ({ sigset_t s; sigprocmask(0, NULL, &s); sigismember(&s, SIGSEGV); }));

    /* mremap: grow moving, contents kept */
    char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(m, 'x', 8192);
    char *g = mremap(m, 8192, 65536, MREMAP_MAYMOVE);
    printf("mremap ok=%d kept=%d tail zero=%d\n", g != MAP_FAILED, g[8191] == 'x', g[65535] == 0);
    /* MAP_FIXED over part of it */
    char *f = mmap(g + 4096, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    printf("fixed ok=%d zero=%d\n", f == g + 4096, f[0] == 0);
    munmap(g, 65536);

    /* file mapping */
    FILE *tf = tmpfile();
    fputs("mapped file contents", tf);
    fflush(tf);
    char *fm = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fileno(tf), 0);
    printf("file map: %.6s\n", fm);
    munmap(fm, 4096);

    /* brk */
    char *b0 = sbrk(0);
    char *b1 = sbrk(100000);
    memset(b1, 1, 100000);
    printf("sbrk grew=%d\n", sbrk(0) == b0 + 100000);
    sbrk(-100000);
    printf("sbrk shrank=%d\n", sbrk(0) == b0);

    /* /proc/self/maps has the mapping */
    char *mm = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;
    while (fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        char perm[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perm) == 3 && lo <= (unsigned long)mm && (unsigned long)mm < hi)
            found = printf("maps: %s\n", perm) > 0;
    }
    fclose(maps);
    printf("found in maps=%d\n", found);

    /* CPU exceptions other than page faults */
    sigaction(SIGFPE, &sa, NULL);
    sigaction(SIGTRAP, &sa, NULL);
    sigaction(SIGILL, &sa, NULL);
    base = 0;
    if (sigsetjmp(env, 1) == 0) {
        volatile int z = 0, q = 7 / z;
        printf("div: no fault %d\n", q);
    } else {
        printf("div by zero: sig=%d code=%d\n", fault_sig, fault_code);
    }
    if (sigsetjmp(env, 1) == 0) {
        __asm__ volatile("int3");
        printf("int3: returned\n");
    } else {
        printf("int3: sig=%d code=%d\n", fault_sig, fault_code);
    }
    if (sigsetjmp(env, 1) == 0) {
        __asm__ volatile("int $0x81");
        printf("int 0x81: no fault\n");
    } else {
        printf("int 0x81: sig=%d code=%d addr=%ld\n", fault_sig, fault_code, (long)fault_addr);
    }
    if (sigsetjmp(env, 1) == 0) {
        __asm__ volatile("hlt");
        printf("hlt: no fault\n");
    } else {
        printf("hlt: sig=%d code=%d\n", fault_sig, fault_code);
    }

    /* NULL dereference */
    base = 0;
    try_read("null", (char *)16);
    return 0;
}
