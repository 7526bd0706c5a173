/* Self-modifying code: a hot function in a writable+executable page is
 * rewritten (the immediate of `mov eax, imm32`) and must return the new
 * value at once; then a store into the next instruction of the running
 * block. Expected output: the same natively and emulated. */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

typedef int (*fn)(void);

int main(void) {
    unsigned char *p = mmap(0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    /* mov eax, 1; ret */
    unsigned char code[] = {0xb8, 1, 0, 0, 0, 0xc3};
    memcpy(p, code, sizeof code);
    long sum = 0;
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 1000; i++) sum += ((fn)p)();
        p[1] = (unsigned char)(round + 2); /* patch the immediate */
        printf("round %d: sum %ld now returns %d\n", round, sum, ((fn)p)());
    }
    /* A store into the next instruction of the same block:
     *   mov ecx, [esp+4]       (8b 4c 24 04): the function's own address
     *   mov byte [ecx+15], 7   (c6 41 0f 07): patches the imm8 below
     *   mov eax, 5             (b8 05 00 00 00)
     *   add eax, 1             (83 c0 01) at offset 13, imm8 at offset 15
     *   ret */
    unsigned char smc[] = {0x8b, 0x4c, 0x24, 0x04, 0xc6, 0x41, 0x0f, 0x07,
                           0xb8, 5, 0, 0, 0, 0x83, 0xc0, 0x01, 0xc3};
    int total = 0;
    for (int i = 0; i < 200; i++) {
        memcpy(p + 64, smc, sizeof smc);
        int (*g)(void *) = (int (*)(void *))(p + 64);
        total += g(p + 64);
    }
    printf("patched next instruction: total %d (12 each)\n", total);
    return 0;
}
