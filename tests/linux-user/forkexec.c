/* fork/vfork/execve/wait: exit statuses, death by signal, an exec of
 * ourselves (stays emulated), of a script, posix_spawn, wait4 rusage. */
#define _GNU_SOURCE
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void report(const char *what, int st)
{
    if (WIFEXITED(st))
        printf("%s: exited %d\n", what, WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        printf("%s: killed by %d\n", what, WTERMSIG(st));
    else
        printf("%s: other %#x\n", what, st);
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "child") == 0) {
        printf("exec'd child says %s (argv0 %s)\n", argv[2], strrchr(argv[0], '/') ? "path" : argv[0]);
        return atoi(argv[2]);
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    int st;
    pid_t p = fork();
    if (p == 0)
        _exit(7);
    printf("waitpid same pid=%d\n", waitpid(p, &st, 0) == p);
    report("fork+_exit", st);

    p = fork();
    if (p == 0) {
        kill(getpid(), SIGKILL);
        _exit(1);
    }
    waitpid(p, &st, 0);
    report("sigkill", st);

    p = fork();
    if (p == 0) {
        abort();
    }
    waitpid(p, &st, 0);
    report("abort", st);

    p = fork();
    if (p == 0) {
        volatile int *z = 0;
        *z = 1;
        _exit(0);
    }
    waitpid(p, &st, 0);
    report("segv", st);

    p = vfork();
    if (p == 0)
        _exit(3);
    waitpid(p, &st, 0);
    report("vfork", st);

    p = fork();
    if (p == 0) {
        char *args[] = { argv[0], "child", "9", NULL };
        execve("/proc/self/exe", args, environ);
        _exit(127);
    }
    waitpid(p, &st, 0);
    report("execve self", st);

    p = fork();
    if (p == 0) {
        char *args[] = { "sh", "-c", "exit 5", NULL };
        execv("/bin/sh", args);
        _exit(127);
    }
    waitpid(p, &st, 0);
    report("execv /bin/sh", st);

    p = fork();
    if (p == 0) {
        char *args[] = { "nonexistent", NULL };
        execv("/nonexistent/prog", args);
        printf("execv failed as expected\n");
        _exit(11);
    }
    waitpid(p, &st, 0);
    report("execv missing", st);

    char *sargs[] = { argv[0], "child", "4", NULL };
    if (posix_spawn(&p, argv[0], NULL, NULL, sargs, environ) == 0) {
        waitpid(p, &st, 0);
        report("posix_spawn", st);
    }

    p = fork();
    if (p == 0)
        _exit(0);
    struct rusage ru;
    printf("wait4=%d\n", wait4(p, &st, 0, &ru) == p);
    siginfo_t si;
    p = fork();
    if (p == 0)
        _exit(12);
    memset(&si, 0, sizeof si);
    waitid(P_PID, p, &si, WEXITED);
    printf("waitid: pid ok=%d code=%d status=%d\n", si.si_pid == p, si.si_code, si.si_status);
    printf("no more children: %d\n", wait(NULL));
    return 0;
}
