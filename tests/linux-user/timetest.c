/* Time: clock_gettime (32-bit and time64 through glibc), gettimeofday,
 * time, nanosleep, clock_nanosleep, itimers, POSIX timers, times. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <sys/times.h>
#include <time.h>
#include <unistd.h>

static volatile int ticks;
static void tick(int s) { (void)s; ticks++; }

static long long ns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

int main(void)
{
    struct timespec a, b, r;
    clock_gettime(CLOCK_MONOTONIC, &a);
    struct timespec d = { 0, 30000000 };
    nanosleep(&d, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long long el = ns(b) - ns(a);
    printf("nanosleep >= 30ms: %d, < 2s: %d\n", el >= 30000000, el < 2000000000);
    clock_getres(CLOCK_MONOTONIC, &r);
    printf("res > 0: %d\n", ns(r) > 0);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    time_t t = time(NULL);
    printf("time vs gettimeofday close: %d\n", t - tv.tv_sec <= 1 && t >= tv.tv_sec);
    clock_gettime(CLOCK_REALTIME, &a);
    printf("realtime after 2020: %d\n", a.tv_sec > 1577836800);
    clock_gettime(CLOCK_MONOTONIC, &a);
    a.tv_nsec += 20000000;
    if (a.tv_nsec >= 1000000000) { a.tv_sec++; a.tv_nsec -= 1000000000; }
    printf("clock_nanosleep abs=%d\n", clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &a, NULL));
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("abs deadline passed: %d\n", ns(b) >= ns(a));

    signal(SIGALRM, tick);
    struct itimerval it = { { 0, 10000 }, { 0, 10000 } };
    setitimer(ITIMER_REAL, &it, NULL);
    while (ticks < 5)
        pause();
    struct itimerval cur;
    getitimer(ITIMER_REAL, &cur);
    printf("itimer ticks>=5: %d interval=%ld\n", ticks >= 5, (long)cur.it_interval.tv_usec);
    memset(&it, 0, sizeof it);
    setitimer(ITIMER_REAL, &it, NULL);

    timer_t tm;
    struct sigevent sev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1 };
    signal(SIGUSR1, tick);
    ticks = 0;
    printf("timer_create=%d\n", timer_create(CLOCK_MONOTONIC, &sev, &tm));
    struct itimerspec its = { { 0, 0 }, { 0, 20000000 } };
    timer_settime(tm, 0, &its, NULL);
    while (!ticks)
        pause();
    printf("posix timer fired=%d\n", ticks);
    timer_delete(tm);
    struct tms tb;
    printf("times ok=%d\n", times(&tb) != (clock_t)-1);
    return 0;
}
