/*
 * The native side of the differential tester: runs IA-32 instruction
 * sequences on the host CPU and reports the state they leave.
 *
 * Built by the test harness with `gcc -m32 -static -O1` and driven over
 * stdin/stdout. The record layouts are described in probe.rs (the Rust side
 * is the reference; keep both in step). Every field is little-endian.
 *
 *   hello   (probe -> harness, once): u32 'PRB1', u32 flags
 *           (bit 0: the low area below 64 KiB is mapped)
 *   case    (harness -> probe): u32 'CASE', u32 code length, state,
 *           u8 code[64], u8 data[DATA_SIZE], u8 low[LOW_SIZE]
 *   result  (probe -> harness): u32 'RSLT', i32 signal (0: none), u32 trap
 *           number, u32 error code, u32 si_addr, u32 si_code, state,
 *           u8 data[DATA_SIZE], u8 low[LOW_SIZE]
 *   state   u32 eax..edi (8), u32 eflags, u32 eip, u32 mxcsr, u32 pad,
 *           u8 xmm0..7 [8][16], u8 fpu[108] (the x87 state as FNSAVE
 *           stores it in 32-bit protected mode)
 *
 * The code is copied to CODE_ADDR and followed by an indirect jump back to
 * case_exit. Registers, EFLAGS, MXCSR, XMM0-7 and the x87 state (FRSTOR)
 * are loaded from the case, and stored back (FNSAVE) at case_exit;
 * ESP is the case's too, so the stack is guest memory (it points into the
 * data area). Faults arrive as signals handled on an alternate stack (the
 * guest ESP may be anything); the handler records the signal, the trap
 * number, error code and the register state of the ucontext, then
 * siglongjmps back. Linux reports the x86 exception vector in the trap
 * number: 0 #DE, 3 #BP, 4 #OF, 5 #BR, 6 #UD, 13 #GP, 14 #PF (si_addr is
 * CR2), 16 #MF (SIGFPE of an unmasked x87 exception, raised by the next
 * waiting instruction), 17 #AC, 19 #XM. For a signal the x87 state comes
 * from the signal frame (see on_signal).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define CODE_ADDR 0x20000000u
#define CODE_PAGE 0x1000u
#define CODE_MAX 64u
#define DATA_ADDR 0x10000000u
#define DATA_SIZE 0x2000u
#define RO_ADDR 0x10003000u
#define RO_SIZE 0x1000u
#define LOW_ADDR 0x7000u
#define LOW_SIZE 0x1000u

#define MAGIC_HELLO 0x31425250u /* "PRB1" */
#define MAGIC_CASE 0x45534143u  /* "CASE" */
#define MAGIC_RESULT 0x544c5352u /* "RSLT" */

struct state {
    uint32_t gpr[8];
    uint32_t eflags;
    uint32_t eip;
    uint32_t mxcsr;
    uint32_t pad;
    uint8_t xmm[8][16];
    uint8_t fpu[108];
} __attribute__((packed));

struct case_in {
    uint32_t magic;
    uint32_t code_len;
    struct state st;
    uint8_t code[CODE_MAX];
    uint8_t data[DATA_SIZE];
    uint8_t low[LOW_SIZE];
} __attribute__((packed));

struct result {
    uint32_t magic;
    int32_t signo;
    uint32_t trapno;
    uint32_t err;
    uint32_t addr;
    uint32_t si_code;
    struct state st;
    uint8_t data[DATA_SIZE];
    uint8_t low[LOW_SIZE];
} __attribute__((packed));

/* Used by the trampoline below (by symbol name). */
struct state in_state, out_state;
uint32_t host_esp;
uint32_t code_entry = CODE_ADDR;
uint32_t exit_ptr;
uint32_t mxcsr_default = 0x1f80;

static sigjmp_buf jump_back;
static struct result res;
static struct case_in cs;

void run_native(void);
void case_exit(void);

/*
 * run_native: saves the host registers, loads the case state and jumps to
 * the code; case_exit: stores the case state and returns to the caller.
 * Offsets: gpr 0, eflags 32, mxcsr 40, xmm 48.
 */
__asm__(
    ".text\n"
    ".globl run_native\n"
    "run_native:\n"
    "  pushal\n"
    "  pushfl\n"
    "  movl %esp, host_esp\n"
    "  ldmxcsr in_state+40\n"
    "  movdqu in_state+48, %xmm0\n"
    "  movdqu in_state+64, %xmm1\n"
    "  movdqu in_state+80, %xmm2\n"
    "  movdqu in_state+96, %xmm3\n"
    "  movdqu in_state+112, %xmm4\n"
    "  movdqu in_state+128, %xmm5\n"
    "  movdqu in_state+144, %xmm6\n"
    "  movdqu in_state+160, %xmm7\n"
    "  frstor in_state+176\n"
    "  pushl in_state+32\n"
    "  popfl\n"
    "  movl in_state+0, %eax\n"
    "  movl in_state+4, %ecx\n"
    "  movl in_state+8, %edx\n"
    "  movl in_state+12, %ebx\n"
    "  movl in_state+20, %ebp\n"
    "  movl in_state+24, %esi\n"
    "  movl in_state+28, %edi\n"
    "  movl in_state+16, %esp\n"
    "  jmp *code_entry\n"
    ".globl case_exit\n"
    "case_exit:\n"
    "  fnsave out_state+176\n"
    "  movl %eax, out_state+0\n"
    "  movl %ecx, out_state+4\n"
    "  movl %edx, out_state+8\n"
    "  movl %ebx, out_state+12\n"
    "  movl %esp, out_state+16\n"
    "  movl %ebp, out_state+20\n"
    "  movl %esi, out_state+24\n"
    "  movl %edi, out_state+28\n"
    "  movl host_esp, %esp\n"
    "  pushfl\n"
    "  popl out_state+32\n"
    "  movdqu %xmm0, out_state+48\n"
    "  movdqu %xmm1, out_state+64\n"
    "  movdqu %xmm2, out_state+80\n"
    "  movdqu %xmm3, out_state+96\n"
    "  movdqu %xmm4, out_state+112\n"
    "  movdqu %xmm5, out_state+128\n"
    "  movdqu %xmm6, out_state+144\n"
    "  movdqu %xmm7, out_state+160\n"
    "  stmxcsr out_state+40\n"
    "  ldmxcsr mxcsr_default\n"
    "  popfl\n"
    "  popal\n"
    "  ret\n");

/*
 * Offsets into the i386 signal frame's FPU state (the kernel's
 * struct _fpstate_32): the FXSR part follows the legacy FSAVE image; magic
 * 0x0000 says it is there, 0xffff that it is not. The legacy image is
 * converted by the kernel from its FXSAVE copy and loses FOP (its FCS and
 * FDS words are the user selectors): FOP, FIP and FDP are taken from the
 * FXSAVE header (FXSR_ENV, 64-bit layout), FCS and FDS are stored as 0 as
 * the processors that deprecate them do.
 */
#define FPSTATE_MAGIC 110
#define FPSTATE_FXSR_ENV 112
#define FPSTATE_MXCSR 136
#define FPSTATE_XMM 272

static void on_signal(int sig, siginfo_t *info, void *ctx)
{
    ucontext_t *uc = ctx;
    greg_t *g = uc->uc_mcontext.gregs;
    res.signo = sig;
    res.si_code = (uint32_t)info->si_code;
    res.addr = (uint32_t)(uintptr_t)info->si_addr;
    res.trapno = (uint32_t)g[REG_TRAPNO];
    res.err = (uint32_t)g[REG_ERR];
    res.st.gpr[0] = (uint32_t)g[REG_EAX];
    res.st.gpr[1] = (uint32_t)g[REG_ECX];
    res.st.gpr[2] = (uint32_t)g[REG_EDX];
    res.st.gpr[3] = (uint32_t)g[REG_EBX];
    res.st.gpr[4] = (uint32_t)g[REG_ESP];
    res.st.gpr[5] = (uint32_t)g[REG_EBP];
    res.st.gpr[6] = (uint32_t)g[REG_ESI];
    res.st.gpr[7] = (uint32_t)g[REG_EDI];
    res.st.eflags = (uint32_t)g[REG_EFL];
    res.st.eip = (uint32_t)g[REG_EIP];
    const uint8_t *fp = (const uint8_t *)uc->uc_mcontext.fpregs;
    uint16_t magic = 0xffff;
    if (fp)
        memcpy(&magic, fp + FPSTATE_MAGIC, 2);
    if (fp)
        memcpy(res.st.fpu, fp, sizeof res.st.fpu);
    if (magic == 0) {
        memcpy(&res.st.mxcsr, fp + FPSTATE_MXCSR, 4);
        memcpy(res.st.xmm, fp + FPSTATE_XMM, sizeof res.st.xmm);
        uint16_t fop;
        uint32_t fip, fdp, fcs_fop, fds = 0xffff0000u;
        memcpy(&fop, fp + FPSTATE_FXSR_ENV + 6, 2);
        memcpy(&fip, fp + FPSTATE_FXSR_ENV + 8, 4);
        memcpy(&fdp, fp + FPSTATE_FXSR_ENV + 16, 4);
        fcs_fop = (uint32_t)(fop & 0x7ff) << 16;
        memcpy(res.st.fpu + 12, &fip, 4);
        memcpy(res.st.fpu + 16, &fcs_fop, 4);
        memcpy(res.st.fpu + 20, &fdp, 4);
        memcpy(res.st.fpu + 24, &fds, 4);
    } else {
        res.st.mxcsr = 0xffffffffu;
    }
    siglongjmp(jump_back, 1);
}

static void die(const char *what)
{
    perror(what);
    exit(2);
}

/*
 * The harness uses [0x30000000, 0x40000000), the guard pages and what lies
 * below 64 KiB outside the low area as addresses that fault: check that
 * nothing of the probe's own (binary, heap, stack, vdso) is there.
 */
static void check_free_ranges(void)
{
    static const uint32_t free_ranges[][2] = {
        {0x30000000u, 0x40000000u},
        {0, LOW_ADDR},
        {LOW_ADDR + LOW_SIZE, 0x10000u},
        {DATA_ADDR - 0x1000, DATA_ADDR},
        {DATA_ADDR + DATA_SIZE, RO_ADDR},
        {RO_ADDR + RO_SIZE, RO_ADDR + RO_SIZE + 0x1000},
    };
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        die("probe: /proc/self/maps");
    char line[512];
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) != 2)
            continue;
        for (unsigned i = 0; i < sizeof free_ranges / sizeof free_ranges[0]; i++) {
            if (lo < free_ranges[i][1] && hi > free_ranges[i][0]) {
                fprintf(stderr, "probe: a mapping overlaps a range the cases expect unmapped: %s",
                        line);
                exit(2);
            }
        }
    }
    fclose(f);
}

static void read_all(void *p, size_t n, int *eof)
{
    size_t got = fread(p, 1, n, stdin);
    if (got == 0 && feof(stdin)) {
        *eof = 1;
        return;
    }
    if (got != n) {
        fprintf(stderr, "probe: short case record (%zu of %zu bytes)\n", got, n);
        exit(2);
    }
}

static void write_all(const void *p, size_t n)
{
    if (fwrite(p, 1, n, stdout) != n)
        die("probe: write");
}

int main(void)
{
    static uint8_t alt_stack[1 << 16];
    stack_t ss = {.ss_sp = alt_stack, .ss_size = sizeof alt_stack, .ss_flags = 0};
    if (sigaltstack(&ss, NULL))
        die("sigaltstack");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGALRM};
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if (sigaction(sigs[i], &sa, NULL))
            die("sigaction");

    /* The guard pages around the areas must stay unmapped. */
    munmap((void *)(DATA_ADDR - 0x1000), 0x1000);
    munmap((void *)(DATA_ADDR + DATA_SIZE), 0x1000);
    munmap((void *)(RO_ADDR + RO_SIZE), 0x1000);
    if (mmap((void *)CODE_ADDR, CODE_PAGE, PROT_READ | PROT_WRITE | PROT_EXEC,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != (void *)CODE_ADDR)
        die("mmap code");
    if (mmap((void *)DATA_ADDR, DATA_SIZE, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != (void *)DATA_ADDR)
        die("mmap data");
    uint8_t *ro = mmap((void *)RO_ADDR, RO_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (ro != (void *)RO_ADDR)
        die("mmap read-only page");
    for (uint32_t i = 0; i < RO_SIZE; i++)
        ro[i] = (uint8_t)(i * 7 + 3);
    if (mprotect(ro, RO_SIZE, PROT_READ))
        die("mprotect");
    /* Below 64 KiB only where vm.mmap_min_addr allows. */
    uint32_t flags = 0;
    void *low = mmap((void *)LOW_ADDR, LOW_SIZE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (low == (void *)LOW_ADDR)
        flags |= 1;
    exit_ptr = (uint32_t)(uintptr_t)case_exit;
    check_free_ranges();

    uint32_t hello[2] = {MAGIC_HELLO, flags};
    write_all(hello, sizeof hello);
    fflush(stdout);

    uint8_t *code = (uint8_t *)CODE_ADDR;
    for (;;) {
        int eof = 0;
        read_all(&cs, sizeof cs, &eof);
        if (eof)
            break;
        if (cs.magic != MAGIC_CASE || cs.code_len > CODE_MAX) {
            fprintf(stderr, "probe: bad case record\n");
            return 2;
        }
        memset(code, 0xcc, CODE_PAGE);
        memcpy(code, cs.code, cs.code_len);
        /* jmp *exit_ptr */
        uint8_t *t = code + cs.code_len;
        uint32_t ep = (uint32_t)(uintptr_t)&exit_ptr;
        t[0] = 0xff;
        t[1] = 0x25;
        memcpy(t + 2, &ep, 4);
        memcpy((void *)DATA_ADDR, cs.data, DATA_SIZE);
        if (flags & 1)
            memcpy((void *)LOW_ADDR, cs.low, LOW_SIZE);
        in_state = cs.st;
        memset(&res, 0, sizeof res);
        res.magic = MAGIC_RESULT;
        if (sigsetjmp(jump_back, 1) == 0) {
            alarm(2);
            run_native();
            alarm(0);
            res.st = out_state;
            res.st.eip = CODE_ADDR + cs.code_len;
        } else {
            alarm(0);
        }
        memcpy(res.data, (void *)DATA_ADDR, DATA_SIZE);
        if (flags & 1)
            memcpy(res.low, (void *)LOW_ADDR, LOW_SIZE);
        write_all(&res, sizeof res);
    }
    fflush(stdout);
    return 0;
}
