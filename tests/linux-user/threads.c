/* Threads: pthread create/join, mutexes and condition variables (futex),
 * an atomic counter (lock xadd) shared by 4 threads, TLS variables,
 * pthread_self/gettid, a detached thread, thread exit values. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define N 4
#define ITER 20000

static __thread int tls_var = 5;
static int counter;
static int plain_counter;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int ready;

static void *worker(void *arg)
{
    int id = (int)(long)arg;
    tls_var = id * 100;
    for (int i = 0; i < ITER; i++) {
        __atomic_fetch_add(&counter, 1, __ATOMIC_SEQ_CST);
        if (i % 100 == 0) {
            pthread_mutex_lock(&mu);
            plain_counter++;
            pthread_mutex_unlock(&mu);
        }
    }
    if (tls_var != id * 100)
        return (void *)-1L;
    return (void *)(long)(id + 1000);
}

static void *waiter(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    while (!ready)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return (void *)(long)syscall(SYS_gettid);
}

static volatile long sig_tid;
static void on_usr1(int s) { (void)s; sig_tid = syscall(SYS_gettid); }

static void *sleeper(void *arg)
{
    (void)arg;
    while (!sig_tid)
        usleep(1000);
    return (void *)(long)syscall(SYS_gettid);
}

int main(void)
{
    pthread_t t[N];
    for (long i = 0; i < N; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    long sum = 0;
    for (int i = 0; i < N; i++) {
        void *r;
        pthread_join(t[i], &r);
        sum += (long)r;
    }
    printf("counter=%d plain=%d exit values sum=%ld main tls=%d\n", counter, plain_counter, sum, tls_var);

    pthread_t w;
    pthread_create(&w, NULL, waiter, NULL);
    usleep(50000);
    pthread_mutex_lock(&mu);
    ready = 1;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    void *tid;
    pthread_join(w, &tid);
    printf("waiter tid differs from main: %d\n", (long)tid != syscall(SYS_gettid));
    signal(SIGUSR1, on_usr1);
    pthread_t sl;
    pthread_create(&sl, NULL, sleeper, NULL);
    usleep(20000);
    pthread_kill(sl, SIGUSR1);
    void *sltid;
    pthread_join(sl, &sltid);
    printf("pthread_kill reached the thread: %d\n", (long)sltid == sig_tid);
    printf("getpid same in thread group: %d\n", getpid() == syscall(SYS_getpid));
    return 0;
}
