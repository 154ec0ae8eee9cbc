/* nr_prof: the recorder behind nr_prof.h (NR_PROFILE builds only; an empty
 * translation unit otherwise).
 *
 * The release of the region lock is timed in __wrap_pthread_mutex_unlock:
 * setup.py links NR_PROFILE builds with -Wl,--wrap=pthread_mutex_unlock, so
 * nr_unlock (wherever it lives and however it is rewritten) needs no hook
 * of its own.  A lock section is one record written at its release, with
 * the times it was asked for, taken and released, and the address nr_lock
 * was called from. */
#ifdef NR_PROFILE
#define _GNU_SOURCE
#include "nr_prof.h"
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#if defined(__has_include)
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define NR_PROF_CALLGRIND 1
#endif
#endif

int nr_prof_on;
static nr_prof_hdr_t *prof;
static nr_prof_rec_t *recs;
static uintptr_t so_base;          /* where this shared object is loaded */
static int32_t prof_pid;

/* The section this thread holds (nr_lock is not re-entrant: one at most). */
static __thread struct { void *lock; int64_t asked, taken; uint64_t site; int flags; } held;

static void refresh_pid(void) { prof_pid = (int32_t)getpid(); }

int64_t nr_prof_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int nr_prof_enabled_slow(void) {
    static pthread_mutex_t once = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&once);
    if (nr_prof_on == 0) {
        int on = -1;
        const char *path = getenv("NANORAY_PROF_FILE");
        int fd = path && *path ? open(path, O_RDWR | O_CLOEXEC) : -1;
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0 && (size_t)st.st_size > sizeof(nr_prof_hdr_t)) {
            void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (p != MAP_FAILED && ((nr_prof_hdr_t *)p)->magic == NR_PROF_MAGIC) {
                prof = p;
                recs = (nr_prof_rec_t *)(prof + 1);
                Dl_info info;
                if (dladdr((void *)&nr_prof_now, &info)) so_base = (uintptr_t)info.dli_fbase;
                refresh_pid();
                pthread_atfork(NULL, NULL, refresh_pid);
                on = 1;
            }
        }
        if (fd >= 0) close(fd);
        __atomic_store_n(&nr_prof_on, on, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&once);
    return nr_prof_on;
}

static nr_prof_rec_t *take(void) {
    uint64_t i = __atomic_fetch_add(&prof->next, 1, __ATOMIC_RELAXED);
    return i < prof->cap ? recs + i : NULL;
}

static uint64_t site_of(void *caller) { return (uint64_t)((uintptr_t)caller - so_base); }

void nr_prof_lock_taken(void *lock, void *caller, int64_t asked, int flags) {
    held.lock = lock;
    held.asked = asked;
    held.taken = nr_prof_now();
    held.site = site_of(caller);
    held.flags = flags;
}

int __real_pthread_mutex_unlock(pthread_mutex_t *m);
int __wrap_pthread_mutex_unlock(pthread_mutex_t *m) {
    if (m != held.lock || !held.lock) return __real_pthread_mutex_unlock(m);
    int64_t released = nr_prof_now();
    held.lock = NULL;
    int rc = __real_pthread_mutex_unlock(m);
    nr_prof_rec_t *e = take();
    if (e) {
        e->t0 = held.asked; e->t1 = held.taken; e->t2 = released;
        e->site = held.site; e->aux = 0; e->pid = prof_pid;
        e->kind = NR_PROF_LOCK; e->flags = (uint16_t)held.flags;
    }
    return rc;
}

void nr_prof_futex(int kind, void *caller, int64_t t0, long rc) {
    int64_t t1 = nr_prof_now();
    nr_prof_rec_t *e = take();
    if (!e) return;
    e->t0 = t0; e->t1 = t1; e->t2 = 0;
    e->site = site_of(caller); e->aux = rc; e->pid = prof_pid;
    e->kind = (uint16_t)kind; e->flags = 0;
}

void nr_prof_mark(uint32_t id, int64_t arg) {
#ifdef NR_PROF_CALLGRIND
    /* Under callgrind every mark ends an interval: its counts are dumped
     * (and zeroed), named by the mark, so each phase of a task between two
     * marks is a dump file of its own.  Outside valgrind these are no-ops. */
    if (RUNNING_ON_VALGRIND && id) {
        char name[32];
        static const char hex[] = "0123456789abcdef";
        int n = 0;
        const char *pre = "mark-";
        while (*pre) name[n++] = *pre++;
        for (int s = 12; s >= 0; s -= 4) name[n++] = hex[(id >> s) & 15];
        name[n] = 0;
        if (id == 1000) CALLGRIND_ZERO_STATS;
        else CALLGRIND_DUMP_STATS_AT(name);
    }
#endif
    if (!nr_prof_enabled()) return;
    nr_prof_rec_t *e = take();
    if (!e) return;
    e->t0 = e->t1 = nr_prof_now(); e->t2 = 0;
    e->site = id; e->aux = arg; e->pid = prof_pid;
    e->kind = NR_PROF_MARK; e->flags = 0;
}
#endif
