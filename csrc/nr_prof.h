/* nr_prof: timestamps at the region lock and the futexes, for
 * benchmarks/bench_breakdown.py (where each microsecond of a task goes, how
 * long each critical section holds the lock).
 *
 * Compiled in only with NR_PROFILE (NANORAY_PROFILE=1 at build time, which
 * also keeps symbols and wraps pthread_mutex_unlock at link time so the
 * release is timed wherever nr_unlock calls it).  Without it every macro
 * below is empty or the bare expression, and the built code is unchanged.
 *
 * With it, a process whose environment names NANORAY_PROF_FILE appends one
 * record per lock section, futex call and mark to that file (mapped shared,
 * so the driver and every worker write into one trace; the script creates
 * and sizes it).  A record costs two or three clock reads (vDSO, ~20 ns).
 * Call sites are return addresses, as offsets into the shared object, for
 * addr2line.  This header never includes Python.h. */
#ifndef NR_PROF_H
#define NR_PROF_H

#include <stdint.h>

#ifdef NR_PROFILE
enum { NR_PROF_LOCK = 1, NR_PROF_WAIT, NR_PROF_WAKE, NR_PROF_MARK };
enum { NR_PROF_SPUN = 1, NR_PROF_BLOCKED = 2 };   /* lock record flags */

typedef struct {
    int64_t t0, t1, t2;   /* lock: asked, taken, released; futex: called, returned; mark: t */
    uint64_t site;        /* caller's offset in the shared object; a mark's id */
    int64_t aux;          /* futex: its result; a mark's argument */
    int32_t pid;
    uint16_t kind;        /* NR_PROF_* */
    uint16_t flags;       /* lock: NR_PROF_SPUN (first trylock failed), NR_PROF_BLOCKED */
} nr_prof_rec_t;
_Static_assert(sizeof(nr_prof_rec_t) == 48, "fixed record layout (read by numpy)");

typedef struct {
    uint64_t magic;       /* NR_PROF_MAGIC */
    uint64_t cap;         /* records the file holds */
    uint64_t next;        /* records taken (atomic add); past cap they are dropped */
    uint64_t pad[5];
} nr_prof_hdr_t;
#define NR_PROF_MAGIC 0x31464f5250524e4eULL   /* "NNRPROF1" */

extern int nr_prof_on;     /* 1 recording, -1 off, 0 not decided yet */
int nr_prof_enabled_slow(void);
static inline int nr_prof_enabled(void) {
    int on = __atomic_load_n(&nr_prof_on, __ATOMIC_RELAXED);
    return on ? on > 0 : nr_prof_enabled_slow() > 0;
}
int64_t nr_prof_now(void);
void nr_prof_lock_taken(void *lock, void *caller, int64_t asked, int flags);
void nr_prof_futex(int kind, void *caller, int64_t t0, long rc);
/* Exported for ctypes: a mark in the trace; ids >= 1000 also drive
 * callgrind under valgrind (1000 zero, 1001 dump). */
void nr_prof_mark(uint32_t id, int64_t arg);

#define NR_PROF_LOCK_ASK() \
    int64_t nr_prof_asked_ = nr_prof_enabled() ? nr_prof_now() : 0; int nr_prof_fl_ = 0
#define NR_PROF_LOCK_SPIN() (nr_prof_fl_ |= NR_PROF_SPUN)
#define NR_PROF_LOCK_BLOCK() (nr_prof_fl_ |= NR_PROF_BLOCKED)
#define NR_PROF_LOCK_TAKEN(lock) \
    do { if (nr_prof_asked_) nr_prof_lock_taken((lock), __builtin_return_address(0), \
                                                 nr_prof_asked_, nr_prof_fl_); } while (0)
#define NR_PROF_FUTEX(kind, expr) ({                                                  \
    int64_t nr_prof_t0_ = nr_prof_enabled() ? nr_prof_now() : 0;                      \
    long nr_prof_rc_ = (expr);                                                        \
    if (nr_prof_t0_) nr_prof_futex((kind), __builtin_return_address(0), nr_prof_t0_,  \
                                   nr_prof_rc_);                                      \
    nr_prof_rc_; })
#else
#define NR_PROF_LOCK_ASK() ((void)0)
#define NR_PROF_LOCK_SPIN() ((void)0)
#define NR_PROF_LOCK_BLOCK() ((void)0)
#define NR_PROF_LOCK_TAKEN(lock) ((void)0)
#define NR_PROF_FUTEX(kind, expr) (expr)
#endif

#endif
