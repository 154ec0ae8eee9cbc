#define _GNU_SOURCE
#include "nr_region.h"
#include "nr_undo.h"
#include "nr_prof.h"
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <linux/futex.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static uint64_t page_up(uint64_t x) { return (x + NR_PAGE - 1) & ~(uint64_t)(NR_PAGE - 1); }

int64_t nr_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void nr_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

int nr_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns) {
    struct timespec ts, *tp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000LL;
        ts.tv_nsec = timeout_ns % 1000000000LL;
        tp = &ts;
    }
    /* Not FUTEX_PRIVATE: the word is shared between processes. */
    long rc = NR_PROF_FUTEX(NR_PROF_WAIT, syscall(SYS_futex, word, FUTEX_WAIT, expected, tp, NULL, 0));
    if (rc == -1 && errno == ETIMEDOUT) return 1;
    return 0;
}

void nr_futex_wake(uint32_t *word, int n) {
    NR_PROF_FUTEX(NR_PROF_WAKE, syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0));
}

#define NR_EVENTS (1u << 17)   /* 16 MiB of the memfd, touched only as tasks finish */

void nr_event_record(nr_region_t *r, uint64_t task, uint32_t kind, int64_t start_ns,
                     int64_t end_ns, uint64_t bytes_in, uint64_t bytes_out, int failed,
                     int32_t pid, const char *name, size_t name_len) {
    nr_header_t *h = r->hdr;
    uint64_t i = __atomic_fetch_add(&h->events_next, 1, __ATOMIC_RELAXED);
    nr_event_t *e = (nr_event_t *)(r->base + h->events_off) + (i & (h->events_cap - 1));
    __atomic_store_n(&e->seq, 0, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    e->start_ns = start_ns;
    e->end_ns = end_ns;
    e->task = task;
    e->bytes_in = bytes_in;
    e->bytes_out = bytes_out;
    e->pid = pid;
    e->kind = kind;
    e->failed = (uint32_t)failed;
    if (name_len >= sizeof e->name) name_len = sizeof e->name - 1;
    memcpy(e->name, name, name_len);
    e->name[name_len] = 0;
    __atomic_store_n(&e->seq, i + 1, __ATOMIC_RELEASE);
}

uint32_t nr_events_read(nr_region_t *r, nr_event_t *out, uint32_t max) {
    nr_header_t *h = r->hdr;
    uint64_t next = __atomic_load_n(&h->events_next, __ATOMIC_ACQUIRE);
    uint64_t first = next > h->events_cap ? next - h->events_cap : 0;
    if (next - first > max) first = next - max;
    uint32_t n = 0;
    for (uint64_t i = first; i < next; i++) {
        nr_event_t *e = (nr_event_t *)(r->base + h->events_off) + (i & (h->events_cap - 1));
        if (__atomic_load_n(&e->seq, __ATOMIC_ACQUIRE) != i + 1) continue;
        out[n] = *e;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&e->seq, __ATOMIC_RELAXED) != i + 1) continue;  /* overwritten */
        n++;
    }
    return n;
}

static void layout(nr_header_t *h, const nr_config_t *c) {
    uint64_t off = page_up(sizeof(nr_header_t));
    h->procs_off = off;
    off = page_up(off + (uint64_t)c->max_procs * sizeof(nr_proc_t));
    h->objs_off = off;
    off = page_up(off + (uint64_t)c->max_objects * 64);
    h->tasks_off = off;
    off = page_up(off + (uint64_t)c->max_tasks * 128);
    h->deps_off = off;
    off = page_up(off + (uint64_t)c->max_deps * 8);
    h->names_off = off;
    off = page_up(off + (uint64_t)NR_MAX_NAMES * 128);
    h->ledgers_off = off;
    off = page_up(off + (uint64_t)c->max_procs * c->max_objects * 4);
    h->held_off = off;
    off = page_up(off + (uint64_t)c->max_procs * (c->max_procs + 1) * 2);
    h->undo_off = off;
    /* Enough for the largest committed step: one object or task with every
     * entry of the tables in its lists. */
    h->undo_cap = 4 * (c->max_objects + c->max_tasks + c->max_deps) + 65536;
    off = page_up(off + (uint64_t)h->undo_cap * sizeof(nr_undo_t));
    h->events_off = off;
    h->events_cap = NR_EVENTS;
    off = page_up(off + (uint64_t)NR_EVENTS * sizeof(nr_event_t));
    h->arena_off = (off + (1u << 21) - 1) & ~(uint64_t)((1u << 21) - 1); /* 2 MiB aligned */
    h->size = h->arena_off + ((c->arena_bytes + NR_PAGE - 1) & ~(uint64_t)(NR_PAGE - 1));
}

int nr_region_create(nr_region_t *r, const nr_config_t *cfg) {
    nr_header_t tmp;
    if (cfg->max_objects >= (1u << 24)) return -EINVAL;   /* ids keep 24 bits of index */
    memset(&tmp, 0, sizeof tmp);
    layout(&tmp, cfg);
    int fd = memfd_create("nanoray", MFD_CLOEXEC);
    if (fd < 0) return -errno;
    if (ftruncate(fd, (off_t)tmp.size) != 0) { int e = errno; close(fd); return -e; }
    char *base = mmap(NULL, tmp.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) { int e = errno; close(fd); return -e; }
    nr_header_t *h = (nr_header_t *)base;
    memcpy(h, &tmp, sizeof tmp);
    if (getrandom(&h->session, sizeof h->session, 0) != (ssize_t)sizeof h->session)
        h->session = (uint64_t)nr_now_ns() ^ ((uint64_t)getpid() << 32);
    h->max_procs = cfg->max_procs;
    h->max_objects = cfg->max_objects;
    h->max_tasks = cfg->max_tasks;
    h->max_deps = cfg->max_deps;
    h->max_names = NR_MAX_NAMES;
    h->cpus_total = h->cpus_avail = cfg->cpus_milli;
    {
        cpu_set_t set;
        int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
        if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
        h->ncpu = n > 0 ? (uint32_t)n : 1;
    }
    h->min_workers = cfg->min_workers;
    h->max_workers = cfg->max_workers;
    h->arena.brk = h->arena_off;
    h->arena.end = h->size;
    h->arena.peak = h->arena_off;

    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&h->lock, &a);
    pthread_mutexattr_destroy(&a);

    __atomic_store_n(&h->magic, NR_MAGIC, __ATOMIC_RELEASE);
    r->base = base; r->hdr = h; r->size = tmp.size; r->fd = fd;
    r->undo_log = base + h->undo_off; r->undo_cap = h->undo_cap;
    r->spawn_fd = -1; r->slot = 0; r->borrowed = 0;
    r->ledger = NULL; r->ledger_hwm = NULL;
    return 0;
}

int nr_region_attach(nr_region_t *r, int fd) {
    nr_header_t h;
    if (pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) return errno ? -errno : -EIO;
    if (h.magic != NR_MAGIC) return -EINVAL;
    char *base = mmap(NULL, h.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) return -errno;
    r->base = base; r->hdr = (nr_header_t *)base; r->size = h.size; r->fd = fd;
    r->undo_log = base + h.undo_off; r->undo_cap = h.undo_cap;
    r->spawn_fd = -1; r->slot = 0; r->borrowed = 0;
    r->ledger = NULL; r->ledger_hwm = NULL;
    return 0;
}

void nr_region_detach(nr_region_t *r) {
    if (r->base) munmap(r->base, r->size);
    r->base = NULL; r->hdr = NULL;
}

/* This process's pid, without a system call per lock (glibc does not cache
 * it); refreshed in a forked child. */
static int32_t self_pid;
static void refresh_pid(void) { self_pid = (int32_t)getpid(); }
static int pid_hooked;
static void pid_init(void) {       /* racing threads both do it: harmless */
    if (!__atomic_exchange_n(&pid_hooked, 1, __ATOMIC_SEQ_CST)) pthread_atfork(NULL, NULL, refresh_pid);
    refresh_pid();
}

/* 's' of /proc/PID/stat: 'T' stopped (SIGSTOP), 't' traced (a debugger). */
static char proc_state(int32_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[1] && p[2] ? p[2] : '?';
}

/* A holder keeps the lock for microseconds; one that keeps it this long is
 * stopped or stuck, and waiting on it silently would look like a hang. */
#define NR_LOCK_STALL_NS (5LL * 1000 * 1000 * 1000)

/* Spin briefly on trylock first: holders keep the lock for well under a
 * microsecond, while sleeping in the kernel costs ~23 us per wake-up here. */
void nr_lock(nr_region_t *r) {
    NR_PROF_LOCK_ASK();
    pthread_mutex_t *m = &r->hdr->lock;
    int rc = 0;
    for (int i = 0; i < 200; i++) {
#ifdef __GLIBC__
        /* Spin on a read while it is held: a trylock would take the line
         * from the holder at each turn. */
        if (i && __atomic_load_n(&m->__data.__lock, __ATOMIC_RELAXED)) {
            rc = EBUSY;
        } else
#endif
        rc = pthread_mutex_trylock(m);
        if (rc != EBUSY) break;
        NR_PROF_LOCK_SPIN();
        if (i > 50) sched_yield(); else nr_cpu_relax();
    }
    for (int waited = 0; rc == EBUSY || rc == ETIMEDOUT; waited++) {
        NR_PROF_LOCK_BLOCK();
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += NR_LOCK_STALL_NS / 1000000000LL;
        rc = pthread_mutex_timedlock(m, &until);
        if (rc == ETIMEDOUT) {
            int32_t holder = __atomic_load_n(&r->hdr->lock_pid, __ATOMIC_RELAXED);
            char st = proc_state(holder);
            __atomic_add_fetch(&r->hdr->lock_stalls, 1, __ATOMIC_RELAXED);
            fprintf(stderr,
                    "nanoray: process %d has waited %d s for the shared region's lock, held "
                    "by process %d%s; nanoray cannot make progress until it runs again\n",
                    (int)getpid(), (waited + 1) * (int)(NR_LOCK_STALL_NS / 1000000000LL),
                    (int)holder,
                    st == 'T' ? ", which is stopped (SIGSTOP or Ctrl-Z: send it SIGCONT)" :
                    st == 't' ? ", which is stopped in a debugger" : "");
        }
    }
    if (__builtin_expect(!self_pid, 0)) pid_init();
    if (rc == EOWNERDEAD) {
        /* The holder died inside a critical section: undo it, check the
         * structures, and only then let anyone use them again. */
        r->hdr->lock_pid = self_pid;
        nr_repair(r);
        pthread_mutex_consistent(m);
    }
    r->hdr->lock_pid = self_pid;
    NR_PROF_LOCK_TAKEN(m);
#ifdef NR_CRASHPOINTS
    nr_crash_checkpoint(r);
#endif
    /* The frees this process (or another in its slot) put off go first,
     * while the log is empty; not in a section that repaired a dead
     * holder's, which leaves the structures as they were before that one. */
    nr_proc_t *me = nr_proc(r, r->slot);
    if (rc != EOWNERDEAD && me->rel_tail != __atomic_load_n(&me->rel_head, __ATOMIC_ACQUIRE))
        nri_release_drain(r, r->slot);
}

void nri_wake_all_groups(nr_header_t *h) {
    for (uint32_t g = 0; g < NR_WAIT_GROUPS; g++) {
        __atomic_add_fetch(&h->wait_seq[g], 1, __ATOMIC_SEQ_CST);
        nr_futex_wake(&h->wait_seq[g], INT_MAX);
    }
}

int32_t nr_lock_holder(nr_region_t *r) {
#ifdef __GLIBC__
    if (!__atomic_load_n(&r->hdr->lock.__data.__lock, __ATOMIC_RELAXED)) return 0;
#else
    if (pthread_mutex_trylock(&r->hdr->lock) == 0) {   /* free: a glance, given back */
        pthread_mutex_unlock(&r->hdr->lock);
        return 0;
    }
#endif
    return __atomic_load_n(&r->hdr->lock_pid, __ATOMIC_RELAXED);
}

/* The lock is held and its last holder died.  A log that overflowed cannot
 * be undone: the runtime is shut down with a message instead of running on
 * half-updated structures. */
void nr_repair(nr_region_t *r) {
    nr_header_t *h = r->hdr;
    h->repairs++;
    if (h->undo_overflow) {
        h->undo_n = 0;
        h->undo_overflow = 0;
        h->broken = 1;
    } else if (h->undo_n) {
        nr_undo_rollback(r);
    }
    int code = 0;
    if (!h->broken && (code = nr_region_verify(r, NULL)) < 0) h->broken = 2;
    if (h->broken && !h->shutdown) {
        fprintf(stderr, "nanoray: a process died inside a critical section and the shared state "
                        "could not be repaired (%s %d); the runtime is shutting down\n",
                h->broken == 1 ? "its undo log had overflowed" : "it failed verification check",
                code);
        __atomic_store_n(&h->shutdown, 1, __ATOMIC_SEQ_CST);
        nri_wake_all_groups(h);
        nr_wake_object_waiters(r);
        for (uint32_t i = 0; i < h->max_procs; i++) {
            nr_proc_t *p = nr_proc(r, i);
            __atomic_add_fetch(&p->wake, 1, __ATOMIC_SEQ_CST);
            nr_futex_wake(&p->wake, INT_MAX);
        }
    }
}

/* Whether an entry is dropped before it is undone (else after). */
static inline int drop_first(uint64_t kind, uint64_t v) {
    if (kind == NR_UNDO_D64 || kind == NR_UNDO_D32) return (int64_t)v > 0;
    if (kind == NR_UNDO_L32) return (int64_t)v < 0;
    return 0;
}

/* Newest entry first.  Restoring an old value is idempotent, so such an
 * entry is dropped after it is applied.  Undoing a delta is not, and a
 * death between undoing and dropping it must only leak: a count or pin
 * may end one too high (the undo of an increment is dropped first, of a
 * decrement after), a ledger entry one too low (the other way round). */
void nr_undo_rollback(nr_region_t *r) {
    nr_header_t *h = r->hdr;
    nr_undo_t *log = (nr_undo_t *)(r->base + h->undo_off);
    uint32_t n = h->undo_n;
    if (n > h->undo_cap) n = h->undo_cap;
    h->rollbacks++;
    while (n) {
        NR_CRASH_SITE();
        nr_undo_t e = log[n - 1];
        uint64_t kind = e.where & 7, off = e.where >> 3;
        if (off + 8 > h->size) { h->undo_n = --n; continue; }
        void *p = r->base + off;
        /* A page this process never touched faults on first access, and a
         * fault is where a signal stops it: touch it before dropping the
         * entry, so a death there cannot fall between drop and undo. */
        (void)*(volatile uint8_t *)p;
        int before = drop_first(kind, e.old);
        if (before) { h->undo_n = n - 1; NR_BARRIER(); }
        switch (kind) {
        case NR_UNDO_U16: *(uint16_t *)p = (uint16_t)e.old; break;
        case NR_UNDO_U32: *(uint32_t *)p = (uint32_t)e.old; break;
        case NR_UNDO_U64: *(uint64_t *)p = e.old; break;
        case NR_UNDO_D64: __atomic_sub_fetch((int64_t *)p, (int64_t)e.old, __ATOMIC_SEQ_CST); break;
        case NR_UNDO_D32: __atomic_sub_fetch((int32_t *)p, (int32_t)(int64_t)e.old, __ATOMIC_SEQ_CST); break;
        case NR_UNDO_L32: {
            /* Only the dead holder's own ledger is in its log, and nobody
             * else writes it: a death between its entry and its add leaves
             * the entry to undo an add that never happened, so clamp at 0
             * (one too low only leaks; a negative ledger means nothing). */
            int32_t *l = (int32_t *)p, v = *l - (int32_t)(int64_t)e.old;
            __atomic_store_n(l, v < 0 ? 0 : v, __ATOMIC_SEQ_CST);
            break;
        }
        }
        NR_BARRIER();
        if (kind <= NR_UNDO_U64) NR_CRASH_SITE();   /* deltas: see nr_undo.h */
        h->undo_n = --n;
        NR_BARRIER();
        h->undone++;
    }
}
