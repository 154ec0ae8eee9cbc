#define _GNU_SOURCE
#include "nr_prefault.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23            /* Linux >= 5.14 */
#endif

/* This process's thread.  Only the thread that starts and stops it writes
 * these (the API's lock serializes those), and the atfork child hook. */
static struct {
    int running;          /* a thread was started and not yet joined */
    pid_t owner;          /* the process that started it */
    pthread_t th;
    char *base;           /* the region's mapping in this process */
    nr_header_t *hdr;
    int fd;               /* its own descriptor of the memfd (fallocate) */
    uint64_t window;
    uint32_t stop;        /* set to make it return */
} pf = {0, 0, 0, NULL, NULL, -1, 0, 0};

/* Which 2 MiB chunks of the region this process has mapped (touched, or
 * populated by its thread): a copy into them needs no touching first.
 * Pages of the memfd are never taken out of a mapping (nothing punches
 * holes or drops them), so a bit once set stays true.  Bits past
 * NR_MAP_BITS are not kept (those chunks are always touched), and a bit
 * is only a hint: a wrong one makes a copy take its faults one by one. */
#define NR_MAP_SHIFT 21
#define NR_MAP_BITS (1u << 19)              /* 1 TiB of region */
static uint64_t mapped[NR_MAP_BITS / 64];
static const char *mapped_base;             /* the region they describe */
static uint64_t mapped_words;               /* words in use: cleared when the region changes */

static void mapped_reset(const char *base, uint64_t size) {
    uint64_t words = ((size >> NR_MAP_SHIFT) + 64) / 64;
    if (words > NR_MAP_BITS / 64) words = NR_MAP_BITS / 64;
    uint64_t old = __atomic_load_n(&mapped_words, __ATOMIC_RELAXED);
    for (uint64_t i = 0; i < (old > words ? old : words); i++)
        __atomic_store_n(&mapped[i], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&mapped_words, words, __ATOMIC_RELAXED);
    __atomic_store_n(&mapped_base, base, __ATOMIC_RELEASE);
}

/* Marks the chunks wholly inside [off, off + n) of the region at base. */
static void mapped_mark(const char *base, uint64_t off, uint64_t n) {
    if (__atomic_load_n(&mapped_base, __ATOMIC_ACQUIRE) != base) return;
    uint64_t first = (off + (1ull << NR_MAP_SHIFT) - 1) >> NR_MAP_SHIFT;
    uint64_t last = (off + n) >> NR_MAP_SHIFT;          /* exclusive */
    for (uint64_t c = first; c < last && c < NR_MAP_BITS; c++)
        __atomic_or_fetch(&mapped[c / 64], 1ull << (c % 64), __ATOMIC_RELAXED);
}

static inline int mapped_test(uint64_t c) {
    return c < NR_MAP_BITS &&
           (__atomic_load_n(&mapped[c / 64], __ATOMIC_RELAXED) >> (c % 64)) & 1;
}

static pthread_once_t hook_once = PTHREAD_ONCE_INIT;

/* In a forked child: the thread did not come along.  Forget it without
 * touching the region (the parent's thread still runs on it).  Nor did
 * the parent's page tables of shared mappings (fork leaves them to fault
 * in again), so nothing is mapped here yet. */
static void after_fork_child(void) {
    if (pf.fd >= 0) close(pf.fd);
    pf.fd = -1;
    pf.running = 0;
    pf.base = NULL;
    pf.hdr = NULL;
    mapped_reset(NULL, 0);
}
static void install_hook(void) { pthread_atfork(NULL, NULL, after_fork_child); }

static inline uint64_t page_down(uint64_t x) { return x & ~(uint64_t)(NR_PAGE - 1); }
static inline uint64_t page_up(uint64_t x) { return page_down(x + NR_PAGE - 1); }

/* The next range to make ready, [*lo, *lo + *n); 0 if none. */
static int next_range(nr_header_t *h, uint64_t window, uint64_t *lo, uint64_t *n) {
    if (__atomic_load_n(&h->shutdown, __ATOMIC_ACQUIRE)) return 0;
    uint64_t brk = __atomic_load_n(&h->arena.brk, __ATOMIC_SEQ_CST);
    uint64_t peak = __atomic_load_n(&h->arena.peak, __ATOMIC_RELAXED);
    uint64_t c = __atomic_load_n(&h->committed, __ATOMIC_RELAXED);
    uint64_t start = page_down(c > peak ? c : peak);   /* below peak: touched by its writers */
    uint64_t end = h->arena.end;
    uint64_t hi = brk + window < end ? page_up(brk + window) : end;
    if (hi > end) hi = end;
    if (start >= hi) return 0;
    *lo = start;
    *n = hi - start < NR_PREFAULT_CHUNK ? hi - start : NR_PREFAULT_CHUNK;
    return 1;
}

static inline void touch(const char *p, const char *end) {
    for (const char *q = p; q < end; q += 65536)
        (void)*(const volatile char *)q;
}

/* Allocates, zeroes and maps [lo, lo + n) without changing a byte a writer
 * may have put there meanwhile (brk can move into the range at any time).
 *
 * fallocate twice: the first call allocates the pages and leaves them
 * "fallocated" (not yet zeroed, zeroed at first fault); the second zeroes
 * those and marks them up to date (shmem_get_folio_gfp, SGP_FALLOC on a
 * folio fallocated earlier), under each page's lock, and skips any page
 * already up to date: one a writer faulted in was zeroed then, before its
 * write.  Neither call takes this process's mmap lock, so the thread,
 * preempted at idle priority mid-call, never holds up the driver's own
 * mmap and munmap (MADV_POPULATE_WRITE would hold it for the call).  The
 * touch then maps the up-to-date pages into this process 16 at a time.
 * Falls back to MADV_POPULATE_WRITE where fallocate is refused, and to a
 * write of what each page holds (an atomic add of 0) on kernels before
 * 5.14. */
static int prepare(uint64_t lo, uint64_t n, int *use_fallocate, int *use_populate) {
    int rc;
    if (*use_fallocate) {
        for (int pass = 0; pass < 2; pass++) {
            do rc = fallocate(pf.fd, 0, (off_t)lo, (off_t)n);
            while (rc != 0 && errno == EINTR);
            if (rc != 0) break;
        }
        if (rc == 0) {
            touch(pf.base + lo, pf.base + lo + n);
            return 0;
        }
        if (errno != EOPNOTSUPP && errno != ENOSYS) return errno;
        *use_fallocate = 0;
    }
    if (*use_populate) {
        do rc = madvise(pf.base + lo, n, MADV_POPULATE_WRITE);
        while (rc != 0 && errno == EINTR);
        if (rc == 0) return 0;
        if (errno != EINVAL) return errno;          /* ENOMEM, EFAULT... */
        *use_populate = 0;                          /* a kernel before 5.14 */
    }
    for (uint64_t o = lo; o < lo + n; o += NR_PAGE)
        __atomic_fetch_add((volatile uint8_t *)(pf.base + o), 0, __ATOMIC_RELAXED);
    return 0;
}

/* Waits while the runtime is busy: a large copy in flight (or just done),
 * or a pool worker running a task.  Even from an idle CPU, making pages
 * ready competes with them for memory bandwidth and the kernel's page
 * allocator: measured here, a warm put ran at 13 GB/s instead of 19 while
 * the thread refilled its window, and a task allocating a large array took
 * longer.  So it works only while nanoray is idle: also no task finished
 * since it last looked (NR_PREFAULT_BUSY_POLL_NS ago at most, or a chunk
 * ago).  Returns 0 if stopped. */
static int wait_quiet(nr_header_t *h, uint64_t *events_seen) {
    for (;;) {
        if (__atomic_load_n(&pf.stop, __ATOMIC_ACQUIRE) ||
            __atomic_load_n(&h->shutdown, __ATOMIC_ACQUIRE))
            return 0;
        int64_t now = nr_now_ns();
        int64_t until = __atomic_load_n(&h->pf_quiet_until, __ATOMIC_RELAXED);
        int64_t busy = (int64_t)__atomic_load_n(&h->nworkers, __ATOMIC_RELAXED) -
                       __atomic_load_n(&h->nidle, __ATOMIC_RELAXED) -
                       __atomic_load_n(&h->nblocked, __ATOMIC_RELAXED) -
                       __atomic_load_n(&h->nstarting, __ATOMIC_RELAXED);
        /* Tasks finished since it last looked: a stream of short ones (round
         * trips) leaves workers idle between them, and is busy all the same. */
        uint64_t ev = __atomic_load_n(&h->events_next, __ATOMIC_RELAXED);
        if (ev != *events_seen) {
            *events_seen = ev;
            busy = 1;
        }
        int64_t wait = until > now ? until - now : busy > 0 ? NR_PREFAULT_BUSY_POLL_NS : 0;
        if (!wait) return 1;
        uint32_t seq = __atomic_load_n(&h->pf_seq, __ATOMIC_ACQUIRE);
        nr_futex_wait(&h->pf_seq, seq, wait);                     /* stop wakes it */
    }
}

static void *pf_main(void *arg) {
    (void)arg;
    nr_header_t *h = pf.hdr;
    struct sched_param sp;
    memset(&sp, 0, sizeof sp);
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);   /* best effort */
    int use_fallocate = 1, use_populate = 1;
    uint64_t events_seen = __atomic_load_n(&h->events_next, __ATOMIC_RELAXED);
    /* Not while the pool starts: its processes start up and import (the
     * zygote numpy, at idle priority too), and the kernel work of making
     * pages ready slowed them even from an idle CPU (memory bandwidth, the
     * page allocator's locks).  At most NR_PREFAULT_GATE_NS of waiting. */
    for (int64_t t0 = nr_now_ns(); !__atomic_load_n(&pf.stop, __ATOMIC_ACQUIRE) &&
                                   !__atomic_load_n(&h->shutdown, __ATOMIC_ACQUIRE) &&
                                   nr_now_ns() - t0 < NR_PREFAULT_GATE_NS; ) {
        if (!__atomic_load_n(&h->nstarting, __ATOMIC_RELAXED) &&
            __atomic_load_n(&h->nworkers, __ATOMIC_RELAXED) >= h->min_workers)
            break;
        uint32_t seq = __atomic_load_n(&h->pf_seq, __ATOMIC_ACQUIRE);
        nr_futex_wait(&h->pf_seq, seq, 5 * 1000 * 1000);           /* stop wakes it */
    }
    while (!__atomic_load_n(&pf.stop, __ATOMIC_ACQUIRE)) {
        uint32_t seq = __atomic_load_n(&h->pf_seq, __ATOMIC_ACQUIRE);
        uint64_t lo, n;
        if (next_range(h, pf.window, &lo, &n)) {
            if (!wait_quiet(h, &events_seen)) break;
            if (!next_range(h, pf.window, &lo, &n)) continue;   /* brk moved meanwhile */
            int err = prepare(lo, n, &use_fallocate, &use_populate);
            if (err) {
                __atomic_store_n(&h->pf_errno, err, __ATOMIC_RELAXED);
                break;                              /* out of memory: stop quietly */
            }
            uint64_t c = __atomic_load_n(&h->committed, __ATOMIC_RELAXED);
            while (c < lo + n && !__atomic_compare_exchange_n(&h->committed, &c, lo + n, 0,
                                                               __ATOMIC_RELEASE, __ATOMIC_RELAXED))
                ;
            __atomic_add_fetch(&h->pf_bytes, n, __ATOMIC_RELAXED);
            mapped_mark(pf.base, lo, n);        /* populated in this process's mapping */
            continue;
        }
        if (__atomic_load_n(&h->shutdown, __ATOMIC_ACQUIRE)) break;
        /* Say it sleeps, then look once more: an allocator that moved brk
         * before seeing pf_sleeping is seen here (both sides fence). */
        __atomic_store_n(&h->pf_sleeping, 1, __ATOMIC_SEQ_CST);
        if (!__atomic_load_n(&pf.stop, __ATOMIC_SEQ_CST) && !next_range(h, pf.window, &lo, &n))
            nr_futex_wait(&h->pf_seq, seq, 1000000000LL);
        __atomic_store_n(&h->pf_sleeping, 0, __ATOMIC_SEQ_CST);
    }
    __atomic_store_n(&h->pf_window, 0, __ATOMIC_RELEASE);
    return NULL;
}

int nr_prefault_start(nr_region_t *r, uint64_t window) {
    pthread_once(&hook_once, install_hook);
    if (pf.running) return -EBUSY;
    if (!window || r->fd < 0 || !r->base) return -EINVAL;
    if (__atomic_load_n(&mapped_base, __ATOMIC_ACQUIRE) != r->base) mapped_reset(r->base, r->size);
    int fd = fcntl(r->fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return -errno;
    nr_header_t *h = r->hdr;
    pf.base = r->base; pf.hdr = h; pf.fd = fd; pf.window = window; pf.stop = 0;
    pf.owner = getpid();
    uint64_t c = __atomic_load_n(&h->committed, __ATOMIC_RELAXED);
    if (c < h->arena_off) __atomic_store_n(&h->committed, h->arena_off, __ATOMIC_RELAXED);
    __atomic_store_n(&h->pf_errno, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&h->pf_pid, (int32_t)pf.owner, __ATOMIC_RELAXED);
    __atomic_store_n(&h->pf_window, window, __ATOMIC_RELEASE);
    /* Signals go to the threads that run Python, never to this one. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&pf.th, NULL, pf_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0) pthread_setname_np(pf.th, "nr-prefault");   /* named before start returns */
    if (rc != 0) {
        __atomic_store_n(&h->pf_window, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&h->pf_pid, 0, __ATOMIC_RELAXED);
        close(fd);
        pf.fd = -1; pf.base = NULL; pf.hdr = NULL;
        return -rc;
    }
    pf.running = 1;
    return 0;
}

void nr_prefault_stop(void) {
    if (!pf.running) return;
    nr_header_t *h = pf.hdr;
    __atomic_store_n(&pf.stop, 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&h->pf_seq, 1, __ATOMIC_SEQ_CST);
    nr_futex_wake(&h->pf_seq, INT_MAX);
    pthread_join(pf.th, NULL);      /* at most one chunk (a few ms) away */
    __atomic_store_n(&h->pf_window, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&h->pf_pid, 0, __ATOMIC_RELAXED);
    close(pf.fd);
    pf.fd = -1; pf.running = 0; pf.base = NULL; pf.hdr = NULL;
}

int nr_prefault_running(const char *base) {
    return pf.running && (base == NULL || pf.base == base);
}

void nr_prefault_kick(nr_region_t *r) {
    nr_header_t *h = r->hdr;
    uint64_t w = __atomic_load_n(&h->pf_window, __ATOMIC_RELAXED);
    if (!w) return;
    uint64_t c = __atomic_load_n(&h->committed, __ATOMIC_RELAXED);
    if (c >= h->arena.end || __atomic_load_n(&h->arena.brk, __ATOMIC_RELAXED) + w / 2 <= c)
        return;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!__atomic_load_n(&h->pf_sleeping, __ATOMIC_SEQ_CST)) return;
    __atomic_add_fetch(&h->pf_seq, 1, __ATOMIC_SEQ_CST);
    nr_futex_wake(&h->pf_seq, 1);
}

void nr_prefault_touch(nr_region_t *r, const char *p, uint64_t n) {
    if (n < NR_TOUCH_MIN) return;
    if (r && r->hdr && __atomic_load_n(&r->hdr->pf_window, __ATOMIC_RELAXED)) {
        /* Tell the thread to keep off until this copy is over (at 8 GB/s,
         * and a little more: back-to-back puts leave it no gap between). */
        int64_t until = nr_now_ns() + (int64_t)(n / 8) + NR_PREFAULT_SETTLE_NS;
        int64_t cur = __atomic_load_n(&r->hdr->pf_quiet_until, __ATOMIC_RELAXED);
        while (cur < until && !__atomic_compare_exchange_n(&r->hdr->pf_quiet_until, &cur, until,
                                                           0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            ;
    }
    if (!r || !r->base || p < r->base || p + n > r->base + r->size) {
        touch(p, p + n);
        return;
    }
    pthread_once(&hook_once, install_hook);
    if (__atomic_load_n(&mapped_base, __ATOMIC_ACQUIRE) != r->base) mapped_reset(r->base, r->size);
    uint64_t off = (uint64_t)(p - r->base), end = off + n;
    uint64_t c0 = off >> NR_MAP_SHIFT, c1 = (end - 1) >> NR_MAP_SHIFT;
    for (uint64_t c = c0; c <= c1; c++) {
        if (mapped_test(c)) continue;
        uint64_t lo = c << NR_MAP_SHIFT, hi = (c + 1) << NR_MAP_SHIFT;
        if (lo < off) lo = off;
        if (hi > end) hi = end;
        touch(r->base + lo, r->base + hi);
    }
    mapped_mark(r->base, off, n);
}
