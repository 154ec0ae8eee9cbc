/* lockline: what the one region lock costs in hardware, for
 * bench_breakdown.py.  Two processes share one page (like the region):
 *
 *   (medians of per-iteration samples, each including one clock read)
 *   lock_local      pthread robust pshared mutex lock+unlock, same core, hot line
 *   lock_handoff    the lock taken alternately by two processes on two cores:
 *                   each acquisition finds the lock word in the other core's
 *                   cache (the cost of a contended hand-off minus the waiting)
 *   pingpong_plain  one-way latency of a store seen by a spinner on another
 *                   core (tight load loop)
 *   pingpong_pause  the same with a PAUSE in the loop, as nanoray's SPIN_UNTIL
 *   pingpong_yield  the same with SPIN_UNTIL's exact shape (63 pauses, then
 *                   a clock read and sched_yield)
 *   hammer          both processes lock, touch 2 shared lines, unlock, as fast
 *                   as they can: acquisitions per second under contention
 * Prints one JSON object (nanoseconds).  cc -O2 -o lockline lockline.c -lpthread */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    pthread_mutex_t lock __attribute__((aligned(64)));
    volatile uint32_t turn __attribute__((aligned(64)));
    volatile uint64_t data[16] __attribute__((aligned(64)));
    volatile uint32_t go __attribute__((aligned(64)));
    double result[4];
} shared_t;

static int64_t now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static void pin(int cpu) {
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    sched_setaffinity(0, sizeof s, &s);
}
static inline void relax(void) { __builtin_ia32_pause(); }

/* Waits for turn == want, in one of three styles. */
static inline void wait_turn(shared_t *s, uint32_t want, int style) {
    if (style == 0) { while (s->turn != want) ; return; }
    if (style == 1) { while (s->turn != want) relax(); return; }
    for (unsigned i = 1; s->turn != want; i++) {
        if ((i & 63) == 0) { (void)now(); sched_yield(); } else relax();
    }
}

/* Medians of per-iteration samples: a preemption by another tenant of this
 * shared VM spoils one sample, not the figure. */
static int cmp64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}
static int64_t samples[200000];
static double median(int n) {
    qsort(samples, (size_t)n, sizeof samples[0], cmp64);
    return (double)samples[n / 2];
}

static double pingpong(shared_t *s, int style, int n) {
    s->turn = 0;
    pid_t pid = fork();
    if (pid == 0) {
        pin(1);
        for (int i = 0; i < n; i++) { wait_turn(s, 1, style); s->turn = 0; }
        _exit(0);
    }
    pin(0);
    for (int i = 0; i < n; i++) {
        int64_t a = now();
        s->turn = 1;
        wait_turn(s, 0, style);
        samples[i] = now() - a;
    }
    waitpid(pid, NULL, 0);
    return median(n) / 2;                        /* one way */
}

static double handoff(shared_t *s, int n) {
    s->turn = 0;
    pid_t pid = fork();
    if (pid == 0) {
        pin(1);
        for (int i = 0; i < n; i++) {
            wait_turn(s, 1, 0);
            pthread_mutex_lock(&s->lock); s->data[0]++; pthread_mutex_unlock(&s->lock);
            s->turn = 0;
        }
        _exit(0);
    }
    pin(0);
    for (int i = 0; i < n; i++) {
        wait_turn(s, 0, 0);
        int64_t a = now();
        pthread_mutex_lock(&s->lock); s->data[0]++; pthread_mutex_unlock(&s->lock);
        samples[i] = now() - a;
        s->turn = 1;
    }
    waitpid(pid, NULL, 0);
    return median(n);
}

static double local(shared_t *s, int n) {
    pin(0);
    for (int i = 0; i < n; i++) {
        int64_t a = now();
        pthread_mutex_lock(&s->lock); s->data[0]++; pthread_mutex_unlock(&s->lock);
        samples[i] = now() - a;
    }
    return median(n);
}

static double clockcost(int n) {
    int64_t a = now(), x = 0;
    for (int i = 0; i < n; i++) x += now();
    return (double)(now() - a - 0 * x) / n;
}

static double hammer(shared_t *s, int n) {
    s->go = 0;
    pid_t pid = fork();
    if (pid == 0) {
        pin(1);
        while (!s->go) ;
        for (int i = 0; i < n; i++) { pthread_mutex_lock(&s->lock); s->data[0]++; s->data[8]++; pthread_mutex_unlock(&s->lock); }
        _exit(0);
    }
    pin(0);
    int64_t a = now();
    s->go = 1;
    for (int i = 0; i < n; i++) { pthread_mutex_lock(&s->lock); s->data[0]++; s->data[8]++; pthread_mutex_unlock(&s->lock); }
    waitpid(pid, NULL, 0);
    return (double)(now() - a) / (2.0 * n);      /* ns per acquisition, both together */
}

int main(void) {
    shared_t *s = mmap(NULL, sizeof(shared_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&s->lock, &a);
    double ll = local(s, 200000);
    double ho = handoff(s, 200000);
    double p0 = pingpong(s, 0, 200000);
    double p1 = pingpong(s, 1, 50000);
    double p2 = pingpong(s, 2, 50000);
    double hm = hammer(s, 1000000);
    printf("{\"clock_gettime\": %.1f, \"lock_local\": %.1f, \"lock_handoff\": %.1f, "
           "\"pingpong_plain\": %.1f, \"pingpong_pause\": %.1f, \"pingpong_yield\": %.1f, "
           "\"hammer_per_acq\": %.1f}\n", clockcost(1000000), ll, ho, p0, p1, p2, hm);
    return 0;
}
