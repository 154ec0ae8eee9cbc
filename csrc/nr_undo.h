/* nr_undo: crash-consistent critical sections.
 *
 * Any process may die at any instruction, including while it holds the
 * region lock.  Every store a lock holder makes to the region's shared
 * structures goes through the macros below, which first append the word's
 * old value to the undo log in the region, then store.  Releasing the lock
 * commits (empties the log).  The next process to take the lock after a
 * holder died (EOWNERDEAD) rolls the log back, newest entry first, so the
 * structures are exactly as they were before the dead holder's section
 * began (nr_undo_rollback), then checks them (nr_region_verify).
 *
 * Words that other processes change with atomics outside the lock
 * (reference counts, pins, a process's own ledger) are logged as deltas,
 * not old values, and undone by subtracting the delta.  A death in the one
 * instruction between a delta and its log entry must only ever leak: a
 * count or a pin one too high (an increment is logged after it is applied,
 * a decrement before), a ledger entry one too low (the other way round,
 * since reaping gives back what the ledger says).  Those windows are the
 * only places a death is not undone exactly, and the only places the crash
 * points skip.  Rolling back follows the same rule, and
 * removes an entry as soon as it has been undone, so a process that dies
 * while rolling back leaves a log the next one finishes.
 *
 * Long sections commit at points where the structures are consistent
 * (nr_undo_commit): freeing a chain of objects and failing the queued calls
 * of a dead actor go one object or call per step, so no section logs more
 * than one object's or one task's worth of stores.
 *
 * Fresh table entries (a task or object just taken from its free list) are
 * initialised with plain stores, but for their free-list link: after a
 * rollback the entry is free again, and its other fields are ignored until
 * the next allocation sets them.
 */
#ifndef NR_UNDO_H
#define NR_UNDO_H

#include "nr_region.h"

/* Crash points, compiled into test builds only (NR_CRASHPOINTS: the test
 * module's own copy of the core).  Every logged store is one, named by its
 * file and line: a test arms the n-th point this process passes, and the
 * process SIGKILLs itself there, inside the critical section.  At each
 * lock and commit the process records a digest of the structures
 * (nr_region_digest), so the test can check that the repair restored
 * exactly that state. */
#ifdef NR_CRASHPOINTS
#define NR_MAX_CRASH_SITES 512
typedef struct { char file[48]; int32_t line; uint64_t hits; } nr_crash_site_t;
typedef struct {
    int32_t pid;          /* the process armed (a forked child inherits the pointer) */
    uint32_t nsites;
    uint64_t count;       /* points passed */
    uint64_t arm;         /* die at this count (0: never) */
    uint32_t died_site;   /* index + 1 of the site it died at */
    uint32_t checkpoints;
    uint64_t digest;      /* at the last lock or commit */
    nr_crash_site_t sites[NR_MAX_CRASH_SITES];
} nr_crash_state_t;
extern nr_crash_state_t *nr_crash_state;
void nr_crash_hit(const char *file, int line);
void nr_crash_checkpoint(nr_region_t *r);
#define NR_CRASH_SITE() nr_crash_hit(__FILE__, __LINE__)
#else
#define NR_CRASH_SITE() ((void)0)
#endif
#define NR_CRASH_AT_END() NR_CRASH_SITE()

/* D64, D32: counts where one too many only leaks (reference counts, pins);
 * L32: a ledger, where one too few only leaks (it is given back at reap). */
enum { NR_UNDO_U16 = 1, NR_UNDO_U32, NR_UNDO_U64, NR_UNDO_D64, NR_UNDO_D32, NR_UNDO_L32 };

typedef struct {
    uint64_t where;       /* region offset << 3 | NR_UNDO_* */
    uint64_t old;         /* old value, or the delta applied */
} nr_undo_t;

#define NR_BARRIER() __atomic_signal_fence(__ATOMIC_SEQ_CST)

#ifdef NR_CRASHPOINTS
void nr_undo_check_holder(nr_region_t *r);   /* aborts unless this thread holds the lock */
#endif

/* Writes the next entry without counting it yet (0: the log is full).
 * Writing it first means a page fault on a fresh page of the log, where a
 * signal is most likely to stop a process, happens before the change it
 * covers, never between a delta and its entry. */
static inline nr_undo_t *nr_undo_prepare(nr_region_t *r, const void *p, uint64_t kind,
                                         uint64_t old) {
    nr_header_t *h = r->hdr;
#ifdef NR_CRASHPOINTS
    nr_undo_check_holder(r);
#endif
    uint32_t n = h->undo_n;
    if (__builtin_expect(n >= r->undo_cap, 0)) { h->undo_overflow = 1; return 0; }
    nr_undo_t *e = (nr_undo_t *)r->undo_log + n;
    e->where = ((uint64_t)((const char *)p - r->base) << 3) | kind;
    e->old = old;
    return e;
}

/* Counts the prepared entry. */
static inline void nr_undo_publish(nr_region_t *r, nr_undo_t *e) {
    if (!e) return;
    NR_BARRIER();          /* the entry is whole before it counts */
    r->hdr->undo_n = (uint32_t)(e - (nr_undo_t *)r->undo_log) + 1;
    NR_BARRIER();          /* and counts before the store it covers */
}

static inline void nr_undo_push(nr_region_t *r, const void *p, uint64_t kind, uint64_t old) {
    nr_undo_publish(r, nr_undo_prepare(r, p, kind, old));
}

static inline uint64_t nr_undo_kind(size_t width) {
    return width == 8 ? NR_UNDO_U64 : width == 4 ? NR_UNDO_U32 : NR_UNDO_U16;
}

/* lv = v, logged.  Needs `r` in scope.  For words of 2, 4 or 8 bytes. */
#define W(lv, v) do {                                                       \
    __typeof__(&(lv)) _wp = &(lv);                                          \
    __typeof__(*_wp) _wv = (v);                                             \
    _Static_assert(sizeof *_wp == 2 || sizeof *_wp == 4 || sizeof *_wp == 8, \
                   "undo logs 2, 4 or 8 byte words");                       \
    uint64_t _wo = 0;                                                       \
    __builtin_memcpy(&_wo, _wp, sizeof *_wp);                               \
    NR_CRASH_SITE();                                                        \
    nr_undo_push(r, _wp, nr_undo_kind(sizeof *_wp), _wo);                   \
    NR_CRASH_SITE();                                                        \
    __atomic_store_n(_wp, _wv, __ATOMIC_RELEASE);                           \
} while (0)

/* Read-modify-write shorthands, logged. */
#define WINC(lv) W(lv, (lv) + 1)
#define WDEC(lv) W(lv, (lv) - 1)
#define WADD(lv, d) W(lv, (lv) + (d))

/* Atomic add to a count others change outside the lock, logged as a delta
 * (increments after, decrements before: a death in between leaks, never
 * frees).  Returns the new value.  LADD32 is for pins, which err the same
 * way; a ledger errs the other way (LEDGER_ADD). */
#define LADD_(lv, d, T, KIND) ({                                           \
    T *_lp = (T *)&(lv);                                                    \
    T _ld = (T)(d), _lr;                                                    \
    NR_CRASH_SITE();                                                        \
    nr_undo_t *_le = nr_undo_prepare(r, _lp, KIND, (uint64_t)(int64_t)_ld); \
    if (_ld > 0) {                                                          \
        _lr = __atomic_add_fetch(_lp, _ld, __ATOMIC_SEQ_CST);               \
        nr_undo_publish(r, _le);                                            \
    } else {                                                                \
        nr_undo_publish(r, _le);                                            \
        _lr = __atomic_add_fetch(_lp, _ld, __ATOMIC_SEQ_CST);               \
    }                                                                       \
    _lr; })
#define LADD64(lv, d) LADD_(lv, d, int64_t, NR_UNDO_D64)
#define LADD32(lv, d) LADD_(lv, d, int32_t, NR_UNDO_D32)

/* A ledger entry: the counts a process holds, given back when it is reaped,
 * so one too many would free an object still in use.  Increments are
 * logged before, decrements after: a death in between leaves it one too
 * low, which only leaks that count. */
#define LEDGER_ADD(lv, d) do {                                              \
    int32_t *_gp = (int32_t *)&(lv);                                        \
    int32_t _gd = (int32_t)(d);                                             \
    NR_CRASH_SITE();                                                        \
    nr_undo_t *_ge = nr_undo_prepare(r, _gp, NR_UNDO_L32, (uint64_t)(int64_t)_gd); \
    __atomic_fetch_add(_gp, 0, __ATOMIC_RELAXED);  /* a fresh page faults here */ \
    if (_gd > 0) {                                                          \
        nr_undo_publish(r, _ge);                                            \
        __atomic_add_fetch(_gp, _gd, __ATOMIC_SEQ_CST);                     \
    } else {                                                                \
        __atomic_add_fetch(_gp, _gd, __ATOMIC_SEQ_CST);                     \
        nr_undo_publish(r, _ge);                                            \
    }                                                                       \
} while (0)

/* Logs every 8-byte word of [p, p + len) (len a multiple of 8), for a
 * memset or memcpy over a record. */
static inline void nr_undo_bytes_(nr_region_t *r, void *p, size_t len) {
    uint64_t *w = (uint64_t *)p;
    for (size_t i = 0; i < len / 8; i++) nr_undo_push(r, w + i, NR_UNDO_U64, w[i]);
}
#define nr_undo_bytes(r, p, len) do {                                       \
    NR_CRASH_SITE();                                                        \
    nr_undo_bytes_((r), (p), (len));                                        \
    NR_CRASH_SITE();                                                        \
} while (0)

/* The structures are consistent here: what came before is final. */
static inline void nr_undo_commit(nr_region_t *r) {
    NR_BARRIER();
    r->hdr->undo_n = 0;
    if (__builtin_expect(r->hdr->undo_overflow, 0)) r->hdr->undo_overflow = 0;
    NR_BARRIER();
#ifdef NR_CRASHPOINTS
    nr_crash_checkpoint(r);
#endif
}

/* Undoes the log (the lock is held, its last holder died). */
void nr_undo_rollback(nr_region_t *r);

#endif
