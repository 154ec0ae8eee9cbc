/* nr_internal: what nr_sched.c and nr_actor.c share inside the C layer.
 * Never included by Cython: the _locked helpers assume the region lock. */
#ifndef NR_INTERNAL_H
#define NR_INTERNAL_H

#include <limits.h>
#include <stddef.h>
#include <sched.h>
#include <string.h>
#include "nr_sched.h"
#include "nr_actor.h"
#include "nr_undo.h"
#include "nr_born.h"

#define LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_SEQ_CST)

typedef struct { uint32_t dep_task, next; } nr_dep_t;

/* Futex wake-ups collected under the lock and issued after it is released,
 * so no process holds the lock across a system call. */
typedef struct {
    int n;
    uint32_t slots[8];
    int nobj;
    uint32_t *obj_words[8]; /* state words of sealed objects that threads sleep on */
    uint32_t groups; /* wait_seq words to wake (a bit per group) */
    int spawn;      /* poke the zygote */
} wakeups_t;

static inline nr_object_t *objs(nr_region_t *r) { return (nr_object_t *)(r->base + r->hdr->objs_off); }
static inline nr_task_t *tasks(nr_region_t *r) { return (nr_task_t *)(r->base + r->hdr->tasks_off); }
static inline nr_dep_t *deps(nr_region_t *r) { return (nr_dep_t *)(r->base + r->hdr->deps_off); }
static inline nr_spec_t *spec_of(nr_region_t *r, nr_task_t *t) { return (nr_spec_t *)(r->base + t->spec); }

/* This process took (d = 1) or is giving back (d = -1) a count on id: its
 * ledger says so, for the reaper.  Taken: recorded after the count (in the
 * same critical section when the count is taken under the lock); given
 * back: unrecorded first.  A death in between leaks one count, never frees
 * one twice. */
static inline void nri_ledger_add(nr_region_t *r, uint64_t id, int32_t d) {
    if (!r->ledger) return;
    uint32_t idx = nr_id_index1(id) - 1;
    if (idx >= r->hdr->max_objects) return;
    if (d > 0 && idx >= LOAD(r->ledger_hwm)) STORE(r->ledger_hwm, idx + 1);
    ADD(&r->ledger[idx], d);
}

/* The same, under the lock: logged, so a rollback undoes it with the count
 * it records (the high-water mark only grows, and is not undone). */
static inline void nri_ledger_add_locked(nr_region_t *r, uint64_t id, int32_t d) {
    if (!r->ledger) return;
    uint32_t idx = nr_id_index1(id) - 1;
    if (idx >= r->hdr->max_objects) return;
    if (d > 0 && idx >= LOAD(r->ledger_hwm)) STORE(r->ledger_hwm, idx + 1);
    LEDGER_ADD(r->ledger[idx], d);
}

/* Clears a process slot for a new process; its generation stays (it moves
 * on only when the slot is freed). */
static inline void nri_proc_reset(nr_region_t *r, nr_proc_t *p, uint32_t kind, uint32_t state) {
    uint32_t gen = p->gen;
    /* All but the ring of put-off frees (empty: a free slot was reaped). */
    nr_undo_bytes(r, p, offsetof(nr_proc_t, rel_head));   /* callers leave RUNNING through
                                                           * nri_set_state first */
    memset(p, 0, offsetof(nr_proc_t, rel_head));
    p->gen = gen;
    p->kind = kind;
    p->state = state;
    uint32_t slot1 = (uint32_t)(p - nr_proc(r, 0)) + 1;
    if (slot1 > r->hdr->proc_hwm) W(r->hdr->proc_hwm, slot1);
}

/* runtime_env keys.  A pool worker runs the tasks of one runtime_env for
 * its life, as Ray's workers do: fresh (env 0) until its first task, it is
 * then keyed to that task's environment (NR_ENV_SET | key; key 0 is none).
 * A task may run in a fresh worker or one keyed to its key. */
#define NR_ENV_SET (1ULL << 63)
/* Nested tasks taken in a row before a top-level one has a turn (the plain
 * queues' next_queue, and the xq's nri_xq_first_fit). */
#define NR_NESTED_STREAK 32
/* How long an idle pool worker of a runtime_env waits before retiring
 * (others: the idle timeout their loop gives, 10 s). */
#define NR_ENV_IDLE_NS 1000000000LL
/* How often a plain worker held back from plain work for a runtime_env's
 * task (nr_sched.c pop_locked) looks again while it sleeps. */
#define NR_HELD_POLL_NS 2000000LL
/* The longest plain workers leave CPUs to a runtime_env's task waiting for
 * a fresh worker, from the first such hold until one of them starts. */
#define NR_HOLD_MAX_NS 250000000LL
/* Whether the xq (either list) holds a task; read without the lock too. */
static inline int nri_xq_any(nr_header_t *h) { return LOAD(&h->xq_head) || LOAD(&h->xnq_head); }
static inline int nri_env_ok(nr_proc_t *p, uint64_t task_env) {
    uint64_t e = LOAD(&p->env);
    return !e || e == (NR_ENV_SET | task_env);
}
/* Whether a task asking for `cpus` milli-CPUs fits `avail`: one asking for
 * none always does (actors may have taken more than there is: avail < 0). */
static inline int nri_cpus_fit(int32_t cpus, int32_t avail) { return cpus <= avail || cpus <= 0; }
/* Keyed to a runtime_env other than none: takes nothing from the plain queues. */
static inline int nri_env_keyed(nr_proc_t *p) { return (LOAD(&p->env) & ~NR_ENV_SET) != 0; }

/* A count held by a task, a payload or the region itself, not a process. */
static inline void nri_incref(nr_region_t *r, uint64_t id) {
    nr_object_t *o = nr_object_lookup(r, id);
    if (o) LADD64(o->refs, 1);
}

/* A waiter spins its full budget only while a CPU is free for it: fewer
 * processes run tasks than the CPUs the runtime may use.  Otherwise its spin
 * would take a CPU from running work (the spinner and a worker time-share
 * it), so it spins only NR_BUSY_SPIN_NS, about what a futex sleep and
 * wake-up would cost the two sides, then sleeps: a hand-off that comes at
 * once (pipelined calls) is still caught without a system call. */
#define NR_BUSY_SPIN_NS 3000
static inline int nri_cpu_free(nr_region_t *r) {
    return LOAD(&r->hdr->nbusy) < LOAD(&r->hdr->ncpu);
}

/* Spins up to spin_ns (NR_BUSY_SPIN_NS while no CPU is free): returns 1 as
 * soon as cond holds. */
#define SPIN_UNTIL(r, cond, spin_ns) ({                                  \
    int _ok = 0;                                                         \
    if ((spin_ns) > 0) {                                                 \
        int64_t _start = nr_now_ns(), _end = _start + (spin_ns);         \
        for (unsigned _i = 1;; _i++) {                                   \
            if (cond) { _ok = 1; break; }                                \
            if ((_i & 63) == 1 && _end > _start + NR_BUSY_SPIN_NS &&     \
                !nri_cpu_free(r))                                        \
                _end = _start + NR_BUSY_SPIN_NS;                         \
            if ((_i & 63) == 0) {                                        \
                if (nr_now_ns() > _end) break;                           \
                sched_yield();                                           \
            } else nr_cpu_relax();                                       \
        }                                                                \
    }                                                                    \
    _ok; })

/* Pins (d = 1) or unpins an object whose payload the C layer reads itself
 * (an actor's death error, copied into each failed call): never spilled. */
static inline void nri_pin(nr_region_t *r, uint64_t id, int32_t d) {
    nr_object_t *o = id ? nr_object_lookup(r, id) : NULL;
    if (o) LADD32(o->pins, d);
}

/* A new pending object with one count, the caller's; 0 when the table is full. */
uint64_t nri_obj_alloc(nr_region_t *r);

void nri_flush(nr_region_t *r, wakeups_t *w);
void nri_enqueue(nr_region_t *r, uint32_t t, wakeups_t *w);
void nri_release(nr_region_t *r, uint32_t t);
void nri_seal(nr_region_t *r, nr_object_t *o, uint64_t data, uint64_t size, int is_error, wakeups_t *w);
void nri_decref(nr_region_t *r, uint64_t id);
void nri_obj_free(nr_region_t *r, nr_object_t *o);
/* nr_object_seal under the lock (its wakeups in w); same return codes (2
 * only with is_error). */
int nri_object_seal(nr_region_t *r, uint64_t id, uint64_t data, uint64_t size, int is_error,
                    wakeups_t *w);
void nri_wake_slot(nr_region_t *r, nr_proc_t *p, uint32_t slot, wakeups_t *w);
void nri_kick(nr_region_t *r, wakeups_t *w);
/* Whether queued shared work fits the free CPUs (under the lock). */
int nri_dispatchable(nr_region_t *r);
/* Under the lock: marks a pool worker spinning for work, or not. */
void nri_set_spinning(nr_region_t *r, nr_proc_t *p, uint32_t on);
/* A task's or actor's pool may name any bundle of its group (NR_POOL_ANY,
 * nr_sched.h); what a process holds names one bundle. */
/* Where a holder's resources come from and go back to: a placement-group
 * bundle that is still there (pool, gen), else the node.  (For a pool with
 * NR_POOL_ANY: its group's first bundle.) */
typedef struct { int32_t *cpus; int64_t *res; uint32_t pg; } nri_acct_t;
static inline nri_acct_t nri_acct(nr_region_t *r, uint32_t pool, uint32_t gen) {
    nr_header_t *h = r->hdr;
    pool &= ~NR_POOL_ANY;
    if (pool && pool <= NR_MAX_PG) {
        nr_pg_t *g = &h->pgs[pool - 1];
        if (g->gen == gen && g->state == NR_PG_CREATED)
            return (nri_acct_t){&g->cpus_avail, g->res_avail, pool};
    }
    return (nri_acct_t){&h->cpus_avail, h->res_avail, 0};
}
/* Resources beyond CPUs (nr_res.c).  nri_pick_gpus: the devices `milli`
 * milli-GPUs would get now (0: none).  nri_xq_first_fit: the first task in
 * the resource queue that fits (0: none) and, if p is given, that p may
 * run (its runtime_env); with take, unlinked (locked); without the lock, a
 * bounded look.  nri_res_take: process p takes res[]
 * (and devices gpus) from account a. */
uint32_t nri_pick_gpus(nr_header_t *h, int32_t milli);
/* The bundle (slot + 1) of the placed group (pool, gen) where cpus and
 * res[] (bits in mask) fit now: the one pool names, or with NR_POOL_ANY the
 * first of its group's that fits; 0 if none does, or the group is gone. */
uint32_t nri_pool_pick(nr_header_t *h, uint32_t pool, uint32_t gen, int32_t cpus, uint32_t mask,
                       const int32_t *res);
/* Where an actor for any bundle goes when none has room now (it takes its
 * resources at creation all the same): of the bundles whose reservation
 * holds cpus and res[], the one with the most CPUs free (the group's first
 * if none holds them).  For a pool naming one bundle: that one. */
uint32_t nri_pool_fallback(nr_header_t *h, uint32_t pool, uint32_t gen, int32_t cpus,
                           const int32_t *res);
/* Whether bundle g reserved at least cpus and res[] (NULL: none). */
static inline int nri_bundle_holds(const nr_pg_t *g, int32_t cpus, const int32_t *res) {
    if (cpus > g->cpus_res) return 0;
    for (uint32_t k = 1; res && k < NR_RES; k++)
        if (res[k] > g->res_res[k]) return 0;
    return 1;
}
uint32_t nri_xq_first_fit(nr_region_t *r, nr_proc_t *p, int take, int locked);
void nri_res_take(nr_region_t *r, nr_proc_t *p, nri_acct_t a, uint32_t mask,
                  const int32_t *res, uint32_t gpus);
/* Resources beyond CPUs held by process p: given back; taken for an actor
 * (from the account a). */
void nri_res_release(nr_region_t *r, nr_proc_t *p);
void nri_res_take_actor(nr_region_t *r, nr_proc_t *p, nri_acct_t a, uint32_t mask,
                        const int32_t *res);
/* Gives back what process p holds (CPUs and the rest) to its account. */
void nri_release_held(nr_region_t *r, nr_proc_t *p);
/* Under the lock: (gen << 32 | t) of the live tasks match() accepts, up to
 * max written to out; returns how many there are. */
uint32_t nri_list_tasks(nr_region_t *r, int (*match)(nr_region_t *, nr_task_t *, uint64_t),
                        uint64_t key, uint64_t *out, uint32_t max);
/* Sets *field (a header's error object, counted) to err (0: none); locks. */
int nri_set_error(nr_region_t *r, uint64_t *field, uint64_t err);
/* Places the pending placement groups the node now has room for. */
void nri_pg_place_pending(nr_region_t *r);
void nri_set_state(nr_region_t *r, nr_proc_t *p, uint32_t state);
void nri_sleepers_remove(nr_region_t *r, uint32_t slot);
/* Gives back every count the dead process in `slot` recorded in its ledger. */
void nri_ledger_release(nr_region_t *r, uint32_t slot, wakeups_t *w);

/* nr_spill.c's hooks (under the lock). */
void nri_spill_forget(nr_region_t *r, nr_object_t *o);   /* a spilled object is being freed */
void nri_spill_release(nr_region_t *r, uint32_t slot);   /* reaping: what it was writing out */
void nri_spill_unlink_pending(nr_region_t *r);           /* after the commit */
int nri_spill_pending(void);

/* nr_actor.c's hooks into the scheduler (all under the lock). */
void nri_actor_orphaned(nr_region_t *r, uint32_t slot1);      /* its handle object was freed */
void nri_actor_owner_gone(nr_region_t *r, uint32_t slot, int32_t pid, wakeups_t *w);
int nri_actor_route(nr_region_t *r, uint32_t t, nr_proc_t *p, uint32_t slot, wakeups_t *w);
uint32_t nri_actor_pop(nr_region_t *r, nr_proc_t *p);
void nri_actor_finish(nr_region_t *r, nr_proc_t *p, uint32_t t);
/* Queues task t to be failed with death's payload (a count is taken on it)
 * at the end of the section; nri_fail_one fails the first queued. */
void nri_fail_push(nr_region_t *r, uint32_t t, uint64_t death);
void nri_fail_one(nr_region_t *r, wakeups_t *w);
/* Frees zombies and fails queued calls, one committed step each. */
void nri_drain(nr_region_t *r, wakeups_t *w);
void nri_actor_hold_place(nr_region_t *r, uint32_t t);

/* Read without the lock, for spinning: may be stale, never unsafe. */
static inline int nri_actor_has_work(nr_region_t *r, nr_proc_t *p) {
    uint32_t f = LOAD(&p->aflags);
    (void)r;
    if (LOAD(&p->create_ready) || (f & (NR_ACTOR_ORPHANED | NR_ACTOR_DEAD))) return 1;
    return (f & NR_ACTOR_CREATED) && LOAD(&p->q_head);   /* queued calls may all run */
}

#endif
