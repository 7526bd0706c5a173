/* Start-up: argv, environment, auxiliary vector, exit status. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv)
{
    printf("hello, world\n");
    printf("argc=%d\n", argc);
    for (int i = 1; i < argc; i++)
        printf("argv[%d]=%s\n", i, argv[i]);
    const char *v = getenv("LU_TEST_VAR");
    printf("LU_TEST_VAR=%s\n", v ? v : "(unset)");
    int n = 0;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "LU_", 3) == 0)
            n++;
    printf("LU_ vars=%d\n", n);
    printf("AT_PAGESZ=%lu\n", getauxval(AT_PAGESZ));
    printf("AT_CLKTCK=%lu\n", getauxval(AT_CLKTCK));
    printf("AT_PLATFORM=%s\n", (char *)getauxval(AT_PLATFORM));
    printf("AT_SECURE=%lu\n", getauxval(AT_SECURE));
    printf("AT_UID=%d\n", getauxval(AT_UID) == getuid());
    printf("AT_RANDOM set=%d\n", getauxval(AT_RANDOM) != 0);
    printf("AT_ENTRY set=%d\n", getauxval(AT_ENTRY) != 0);
    printf("AT_PHDR set=%d\n", getauxval(AT_PHDR) != 0);
    printf("AT_EXECFN=%s\n", strrchr((char *)getauxval(AT_EXECFN), '/'));
    printf("sysconf pagesize=%ld\n", sysconf(_SC_PAGESIZE));
    fflush(stdout);
    if (argc > 1 && strcmp(argv[1], "exit") == 0)
        exit(atoi(argv[2]));
    if (argc > 1 && strcmp(argv[1], "abort") == 0)
        abort();
    return 0;
}
