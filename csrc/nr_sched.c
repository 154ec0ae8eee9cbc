#define _GNU_SOURCE
#include "nr_sched.h"
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nr_internal.h"

nr_task_t *nr_task(nr_region_t *r, uint32_t t) { return tasks(r) + (t - 1); }

void nri_flush(nr_region_t *r, wakeups_t *w) {
    for (int i = 0; i < w->n; i++) nr_futex_wake(&nr_proc(r, w->slots[i])->wake, 1);
    for (int i = 0; i < w->nobj; i++) nr_futex_wake(w->obj_words[i], INT_MAX);
    for (uint32_t g = 0, m = w->groups; m; g++, m >>= 1)
        if (m & 1) nr_futex_wake(&r->hdr->wait_seq[g], INT_MAX);
    if (w->spawn && r->spawn_fd >= 0) {
        uint64_t one = 1;
        ssize_t rc = write(r->spawn_fd, &one, sizeof one);
        (void)rc;
    }
}

void nr_unlock(nr_region_t *r) {
    nr_header_t *h = r->hdr;
    NR_CRASH_AT_END();
    if (__builtin_expect(h->zombie_head | h->fail_head, 0)) {
        wakeups_t w = {0};
        nri_drain(r, &w);
        NR_CRASH_AT_END();
        nr_undo_commit(r);
        if (nri_spill_pending()) nri_spill_unlink_pending(r);
        pthread_mutex_unlock(&h->lock);
        nri_flush(r, &w);
        return;
    }
    nr_undo_commit(r);
    if (__builtin_expect(nri_spill_pending(), 0)) nri_spill_unlink_pending(r);
    pthread_mutex_unlock(&h->lock);
}

/* ---- queues and processes --------------------------------------------- */

/* Every change of a process's state goes through here, so the count of idle
 * pool workers (what decides whether to start another) stays exact. */
void nri_set_state(nr_region_t *r, nr_proc_t *p, uint32_t state) {
    if (p->state == state) return;
    if (p->state == NR_PROC_RUNNING) WDEC(r->hdr->nbusy);
    if (state == NR_PROC_RUNNING) WINC(r->hdr->nbusy);
    if (p->kind == NR_KIND_WORKER) {
        if (p->state == NR_PROC_IDLE) WDEC(r->hdr->nidle);
        if (state == NR_PROC_IDLE) WINC(r->hdr->nidle);
        if (p->state == NR_PROC_BLOCKED) WDEC(r->hdr->nblocked);
        if (state == NR_PROC_BLOCKED) WINC(r->hdr->nblocked);
    }
    W(p->state, state);
}

/* Nested tasks taken in a row before a waiting top-level task gets its
 * turn.  Nested first keeps a wide fan-out (parents blocked in get() on
 * their children) within a few workers; the turn bounds how long a stream
 * of nested work can hold back top-level tasks.  At 1 in 33, parents start
 * slower than their ten children each finish, so blocked parents do not
 * pile up. */

/* Which shared queue's head runs next: the nested queue's when it fits
 * (but for the top-level queue's turn), else the top-level queue's; 0 when
 * neither fits the free CPUs. */
static inline uint32_t *next_queue(nr_header_t *h, nr_region_t *r) {
    int nq = h->nq_head && nri_cpus_fit(nr_task(r, h->nq_head)->cpus, h->cpus_avail);
    int rq = h->rq_head && nri_cpus_fit(nr_task(r, h->rq_head)->cpus, h->cpus_avail);
    if (nq && !(rq && h->nq_streak >= NR_NESTED_STREAK)) return &h->nq_head;
    return rq ? &h->rq_head : 0;
}

static inline int dispatchable(nr_header_t *h, nr_region_t *r) {
    return next_queue(h, r) != 0 || (nri_xq_any(h) && nri_xq_first_fit(r, NULL, 0, 1));
}

/* dispatchable() for worker p, read without the lock, for spinning: may be
 * stale, never unsafe (the task table is always mapped); the caller
 * re-checks under the lock. */
static inline int shared_work_fits(nr_region_t *r, nr_proc_t *p) {
    if (!nri_env_keyed(p)) {
        int32_t avail = LOAD(&r->hdr->cpus_avail);
        uint32_t hd = LOAD(&r->hdr->nq_head);
        if (hd && nri_cpus_fit(LOAD(&nr_task(r, hd)->cpus), avail)) return 1;
        hd = LOAD(&r->hdr->rq_head);
        if (hd && nri_cpus_fit(LOAD(&nr_task(r, hd)->cpus), avail)) return 1;
    }
    return nri_xq_any(r->hdr) && nri_xq_first_fit(r, p, 0, 0);
}

int nri_dispatchable(nr_region_t *r) { return dispatchable(r->hdr, r); }

void nri_set_spinning(nr_region_t *r, nr_proc_t *p, uint32_t on) {
    if (p->spinning == on) return;
    W(p->spinning, on);
    if (on) WINC(r->hdr->nspinning); else WDEC(r->hdr->nspinning);
}

void nri_wake_slot(nr_region_t *r, nr_proc_t *p, uint32_t slot, wakeups_t *w) {
    W(p->sleeping, 0);
    ADD(&p->wake, 1);
    if (w->n < 8) w->slots[w->n++] = slot;
    else nr_futex_wake(&p->wake, 1);     /* rare: more than 8 in one section */
}

void nri_sleepers_remove(nr_region_t *r, uint32_t slot) {
    nr_header_t *h = r->hdr;
    uint32_t *link = &h->sleep_head;
    while (*link) {
        if (*link == slot + 1) {
            W(*link, nr_proc(r, slot)->sleep_next);
            WDEC(h->nsleeping);
            return;
        }
        link = &nr_proc(r, *link - 1)->sleep_next;
    }
}

/* Wakes the first sleeping pool worker that `pick` accepts: WAKE_ANY, the
 * first asleep; WAKE_ENV, one that may run a task of runtime_env key `env`;
 * WAKE_WORK, one that has a queued task it may run (nri_xq_first_fit for
 * it).  0 if none does. */
enum { WAKE_ANY, WAKE_ENV, WAKE_WORK };
static int wake_first_locked(nr_region_t *r, wakeups_t *w, int pick, uint64_t env) {
    nr_header_t *h = r->hdr;
    for (uint32_t *link = &h->sleep_head; *link; link = &nr_proc(r, *link - 1)->sleep_next) {
        uint32_t slot = *link - 1;
        nr_proc_t *p = nr_proc(r, slot);
        if (pick == WAKE_ENV && !nri_env_ok(p, env)) continue;
        if (pick == WAKE_WORK && !nri_xq_first_fit(r, p, 0, 1)) continue;
        W(*link, p->sleep_next);
        WDEC(h->nsleeping);
        nri_wake_slot(r, p, slot, w);
        return 1;
    }
    return 0;
}

/* An idle pool worker (spinning, or between tasks) that may run a task of
 * runtime_env key env. */
static int idle_taker(nr_region_t *r, uint64_t env) {
    for (uint32_t i = 0; i < r->hdr->proc_hwm; i++) {
        nr_proc_t *p = nr_proc(r, i);
        if (p->kind == NR_KIND_WORKER && p->state == NR_PROC_IDLE && nri_env_ok(p, env))
            return 1;
    }
    return 0;
}

/* Whether a pool worker keyed to runtime_env key env is idle or running a
 * task (not blocked in get()): a task of it will have a worker without a
 * fresh one. */
static int env_has_worker(nr_region_t *r, uint64_t env) {
    for (uint32_t i = 0; i < r->hdr->proc_hwm; i++) {
        nr_proc_t *p = nr_proc(r, i);
        if (p->kind == NR_KIND_WORKER && p->env == (NR_ENV_SET | env) &&
            (p->state == NR_PROC_IDLE || p->state == NR_PROC_RUNNING))
            return 1;
    }
    return 0;
}

/* Asks the zygote for a worker when runnable work has CPUs but no worker is
 * free to take it: every pool worker is running a task or blocked in get()
 * (having lent its CPUs), or, for work of runtime_env key env (keyed: only
 * when workers of another environment exist), every idle one is keyed to
 * another.  A worker between two tasks counts as idle, so a burst of
 * submissions never starts extra processes; a starting one is fresh, so it
 * may run anything. */
static void maybe_spawn_locked(nr_region_t *r, wakeups_t *w, int keyed, uint64_t env) {
    nr_header_t *h = r->hdr;
    if (h->spawn_pending || h->nstarting) return;
    if (keyed ? idle_taker(r, env) : h->nidle != 0) return;
    if (h->nworkers >= h->max_workers) {
        /* No room for a fresh one: an idle worker of another environment
         * makes room (the next pool worker whose take finds nothing retires:
         * nr_task_finish_next), woken now if one sleeps. */
        if (keyed && !h->evict && h->nidle) {
            W(h->evict, 1);
            wake_first_locked(r, w, WAKE_ANY, 0);
        }
        return;
    }
    if (keyed) W(h->spawn_fresh, 1);
    W(h->spawn_pending, 1);
    w->spawn = 1;
}

/* Gets queued work moving: wake a sleeper if the spinners cannot cover it. */
void nri_kick(nr_region_t *r, wakeups_t *w) {
    nr_header_t *h = r->hdr;
    if (h->npg_pending) nri_pg_place_pending(r);
    uint64_t env = 0;
    uint32_t t = nri_xq_any(h) ? nri_xq_first_fit(r, NULL, 0, 1) : 0;
    if (!next_queue(h, r)) {             /* the first runnable task: plain, or the xq's */
        if (!t) return;
        env = nr_task(r, t)->env;
    } else if (t && nr_task(r, t)->env) {
        /* Plain work, and a task of a runtime_env that fits too: wake a
         * worker of it, or when it has none, start one below the worker
         * limit (plain workers leave it CPUs meanwhile: hold_for; at the
         * limit no plain worker is evicted for it while plain work lasts). */
        uint64_t e = nr_task(r, t)->env;
        if (!wake_first_locked(r, w, WAKE_ENV, e) && !env_has_worker(r, e) &&
            h->nworkers < h->max_workers)
            maybe_spawn_locked(r, w, 1, e);
    }
    if (!env && !h->nenv_workers) {      /* every worker may run it */
        if (h->rq_len + h->xq_len > h->nspinning && wake_first_locked(r, w, WAKE_ANY, 0)) return;
        maybe_spawn_locked(r, w, 0, 0);
        return;
    }
    /* Runtime_envs in play: spinners may be keyed to another, so wake one
     * that may run it; else one asleep with other work it may run (a task
     * that cannot have a worker yet holds up no other environment's); else
     * look for one idle, or start a fresh one. */
    if (wake_first_locked(r, w, WAKE_ENV, env)) return;
    if (nri_xq_any(h) && wake_first_locked(r, w, WAKE_WORK, 0)) return;
    maybe_spawn_locked(r, w, 1, env);
}

void nri_enqueue(nr_region_t *r, uint32_t t, wakeups_t *w) {
    nr_header_t *h = r->hdr;
    nr_task_t *task = nr_task(r, t);
    if (task->kind == NR_SPEC_CANCELLED) {   /* its actor is gone: just released */
        nri_fail_push(r, t, 0);
        return;
    }
    if (task->target) {
        nr_proc_t *p = nr_proc(r, task->target - 1);
        if (nri_actor_route(r, t, p, task->target - 1, w)) return;
    }
    W(task->state, NR_TASK_READY);
    W(task->next, 0);
    if (task->target) {
        nr_proc_t *p = nr_proc(r, task->target - 1);
        if (p->q_tail) W(nr_task(r, p->q_tail)->next, t); else W(p->q_head, t);
        W(p->q_tail, t);
        WINC(p->q_len);
        if (p->sleeping) {
            if (p->kind == NR_KIND_WORKER) nri_sleepers_remove(r, task->target - 1);
            nri_wake_slot(r, p, task->target - 1, w);
        }
        return;
    }
    uint32_t pslot = (task->pool & ~NR_POOL_ANY) - 1;
    if (task->pool && !nri_acct(r, task->pool, task->pool_gen).pg &&
        !(pslot < NR_MAX_PG && h->pgs[pslot].gen == task->pool_gen &&
          h->pgs[pslot].state == NR_PG_PENDING)) {
        nri_fail_push(r, t, h->pg_gone_err);   /* its group was removed: it never runs */
        return;
    }
    if (task->res_mask || task->pool || task->env || task->cpus > h->cpus_total) {
        if (task->cancelled) {           /* its arguments came after cancel(): it would only */
            nri_release(r, t);           /* wait here (its returns are the canceller's) */
            return;
        }
        uint32_t *xh = task->nested ? &h->xnq_head : &h->xq_head;
        uint32_t *xt = task->nested ? &h->xnq_tail : &h->xq_tail;
        if (*xt) W(nr_task(r, *xt)->next, t); else W(*xh, t);
        W(*xt, t);
        WINC(h->xq_len);
        WINC(h->xq_gen);
        nri_kick(r, w);
        return;
    }
    uint32_t *head = task->nested ? &h->nq_head : &h->rq_head;
    uint32_t *tail = task->nested ? &h->nq_tail : &h->rq_tail;
    if (*tail) W(nr_task(r, *tail)->next, t); else W(*head, t);
    W(*tail, t);
    WINC(h->rq_len);                     /* both queues */
    nri_kick(r, w);
}

/* Whether plain worker p should leave the plain queues' next task alone
 * for task e (index t), of a runtime_env with no idle or running worker,
 * that fits the free CPUs: when taking it would leave e too few, a fresh
 * worker can come for e (below the worker limit, or one is starting:
 * nri_kick asks), and not for longer than NR_HOLD_MAX_NS since the first
 * hold for e (a fork that stalls must not stop plain work).  Otherwise
 * plain work would take e's CPUs again and again while it lasts.  (A task
 * whose environment has a worker runs when that worker is free; at the
 * limit no plain worker is evicted for it while plain work is queued.) */
static int hold_for(nr_region_t *r, nr_task_t *e, uint32_t t) {
    nr_header_t *h = r->hdr;
    uint32_t *head = next_queue(h, r);
    if (!head || nri_cpus_fit(e->cpus, h->cpus_avail - nr_task(r, *head)->cpus)) return 0;
    if (h->nworkers >= h->max_workers && !h->spawn_pending && !h->nstarting) return 0;
    if (env_has_worker(r, e->env)) return 0;
    int64_t now = nr_now_ns();
    uint64_t key = (uint64_t)e->gen << 32 | t;
    if (!h->hold_since || h->hold_task != key) {   /* e's clock (unlogged hints: not in the digest) */
        h->hold_since = now;
        h->hold_task = key;
    }
    return now - h->hold_since < NR_HOLD_MAX_NS;
}

/* The next task for slot p, 0 if none (*held: left for a runtime_env's
 * task, hold_for). */
static uint32_t pop_locked(nr_region_t *r, nr_proc_t *p, int *held) {
    nr_header_t *h = r->hdr;
    if (p->kind == NR_KIND_ACTOR) return nri_actor_pop(r, p);
    uint32_t t = p->q_head;
    if (t) {
        W(p->q_head, nr_task(r, t)->next);
        if (!p->q_head) W(p->q_tail, 0);
        WDEC(p->q_len);
        return t;
    }
    if (p->kind != NR_KIND_WORKER) return 0;
    if (nri_xq_any(h)) {
        if ((t = nri_xq_first_fit(r, p, 1, 1))) return t;
        if (!nri_env_keyed(p) && (t = nri_xq_first_fit(r, NULL, 0, 1)) &&
            !nri_env_ok(p, nr_task(r, t)->env) && hold_for(r, nr_task(r, t), t)) {
            *held = 1;
            return 0;
        }
    }
    if (nri_env_keyed(p)) return 0;      /* the plain queues' tasks are not its */
    uint32_t *head = next_queue(h, r);
    if (!head) return 0;
    t = *head;
    W(h->nq_streak, head == &h->nq_head ? h->nq_streak + 1 : 0);
    W(*head, nr_task(r, t)->next);
    if (!*head) {
        if (head == &h->nq_head) W(h->nq_tail, 0); else W(h->rq_tail, 0);
    }
    WDEC(h->rq_len);
    return t;
}

static void start_task_locked(nr_region_t *r, uint32_t slot, uint32_t t) {
    nr_proc_t *p = nr_proc(r, slot);
    nr_task_t *task = nr_task(r, t);
    W(task->state, NR_TASK_RUNNING);
    W(task->proc, slot + 1);
    WINC(task->attempts);
    if (p->kind == NR_KIND_ACTOR) {      /* may run several; holds its CPUs for life */
        WINC(p->nrunning);
        nri_set_state(r, p, NR_PROC_RUNNING);
        return;
    }
    W(p->task, t);
    nri_set_state(r, p, NR_PROC_RUNNING);
    if (!p->env && p->kind == NR_KIND_WORKER) {     /* its first task keys it */
        W(p->env, NR_ENV_SET | task->env);
        if (task->env) WINC(r->hdr->nenv_workers);
    }
    if (task->env && r->hdr->hold_task == ((uint64_t)task->gen << 32 | t))
        r->hdr->hold_since = 0;                     /* hold_for's clock */
    /* In a placement group: the bundle it fits (it was taken because one
     * does; its group's first otherwise). */
    uint32_t pool = task->target || !task->pool ? 0 :
        nri_pool_pick(r->hdr, task->pool, task->pool_gen, task->cpus, task->res_mask, task->res);
    if (!pool && !task->target && task->pool) pool = task->pool & ~NR_POOL_ANY;
    nri_acct_t a = nri_acct(r, pool, task->pool_gen);
    W(p->cpus_held, task->target ? 0 : task->cpus);
    W(*a.cpus, *a.cpus - p->cpus_held);
    if (a.pg) {
        W(p->pool, pool);
        W(p->pool_gen, task->pool_gen);
    }
    if (task->res_mask && !task->target) {
        uint32_t gpus = task->res_mask >> NR_RES_GPU & 1 ? nri_pick_gpus(r->hdr, task->res[NR_RES_GPU]) : 0;
        nri_res_take(r, p, a, task->res_mask, task->res, gpus);
        W(task->gpu_mask, gpus);
    }
}

/* Pops and starts slot's next task (0 if none); if runnable work remains,
 * chains a wake-up to another worker.  A pool worker that finds none it
 * may run while work is queued (of another runtime_env) hands it on too:
 * pool workers take their next task themselves, so no one else kicks. */
static uint32_t take_locked(nr_region_t *r, uint32_t slot, wakeups_t *w, int *held) {
    nr_proc_t *p = nr_proc(r, slot);
    uint32_t t = pop_locked(r, p, held);
    if (t) {
        start_task_locked(r, slot, t);
        nri_kick(r, w);
        return t;
    }
    if (p->kind == NR_KIND_WORKER && !p->task && p->state == NR_PROC_RUNNING)
        nri_set_state(r, p, NR_PROC_IDLE);   /* finished in this section (finish_locked's stay) */
    if (p->kind == NR_KIND_WORKER &&
        (nri_xq_any(r->hdr) || (r->hdr->nenv_workers && r->hdr->rq_len))) {
        nri_kick(r, w);
    }
    return 0;
}

/* Ends slot's task t.  stay: a pool worker that takes its next task in the
 * same section (take_locked) stays RUNNING meanwhile, and take_locked makes
 * it IDLE if it finds none: a task's finish and the next one's start then
 * move neither the busy nor the idle count (lines the driver reads while it
 * spins).  Nothing between the two kicks (nri_release frees objects and
 * actors without one); a kick there would count it busy. */
static void finish_locked(nr_region_t *r, uint32_t slot, uint32_t t, wakeups_t *w, int stay) {
    nr_proc_t *p = nr_proc(r, slot);
    if (p->kind == NR_KIND_ACTOR) {
        nri_actor_finish(r, p, t);
        return;
    }
    nri_release_held(r, p);
    W(p->task, 0);
    if (!stay || p->kind != NR_KIND_WORKER) nri_set_state(r, p, NR_PROC_IDLE);
    nri_release(r, t);
    if (r->hdr->npg_pending) nri_pg_place_pending(r);
    if (p->kind != NR_KIND_WORKER) nri_kick(r, w);  /* pool workers poll next themselves */
}

/* Pool worker p leaves the pool (it returns -1 to its loop, and exits). */
static void retire_locked(nr_region_t *r, nr_proc_t *p, wakeups_t *w) {
    nr_header_t *h = r->hdr;
    nri_set_state(r, p, NR_PROC_EXITED);
    WDEC(h->nworkers);
    if (nri_env_keyed(p)) WDEC(h->nenv_workers);
    nri_kick(r, w);                      /* work that arrived meanwhile finds a worker */
}

/* An idle pool worker that found nothing it may run, while room is wanted
 * for a fresh worker (maybe_spawn_locked): it retires, taking the request. */
static int evicted_locked(nr_region_t *r, nr_proc_t *p, wakeups_t *w) {
    nr_header_t *h = r->hdr;
    if (!h->evict || p->kind != NR_KIND_WORKER || p->q_head) return 0;
    W(h->evict, 0);
    if (!dispatchable(h, r)) return 0;   /* taken meanwhile: no room is wanted any more */
    retire_locked(r, p, w);
    return 1;
}

int64_t nr_task_next(nr_region_t *r, uint32_t slot, int64_t spin_ns, int64_t idle_timeout_ns) {
    return nr_task_finish_next(r, slot, 0, spin_ns, idle_timeout_ns);
}

int64_t nr_task_finish_next(nr_region_t *r, uint32_t slot, uint32_t done, int64_t spin_ns,
                            int64_t idle_timeout_ns) {
    nr_header_t *h = r->hdr;
    nr_proc_t *p = nr_proc(r, slot);
    for (;;) {
        wakeups_t w = {0};
        nr_lock(r);
        if (done) {                      /* the task it ran: finished in this section */
            finish_locked(r, slot, done, &w, 0);
            done = 0;
        }
        if (h->shutdown) { nr_unlock(r); nri_flush(r, &w); return 0; }
        int held = 0;
        uint32_t t = take_locked(r, slot, &w, &held);
        if (t) {
            nr_unlock(r);
            nri_flush(r, &w);
            return t;
        }
        if (nr_actor_should_exit(p)) { nr_unlock(r); nri_flush(r, &w); return -2; }
        if (evicted_locked(r, p, &w)) { nr_unlock(r); nri_flush(r, &w); return -1; }
        if (!p->nrunning) nri_set_state(r, p, NR_PROC_IDLE);
        int is_worker = p->kind == NR_KIND_WORKER;
        /* Counted under the lock and undone under it, so reap can undo it
         * for a process that dies mid-spin. */
        if (is_worker) nri_set_spinning(r, p, 1);
        nr_unlock(r);
        nri_flush(r, &w);
        memset(&w, 0, sizeof w);

        /* Held back from plain work (pop_locked): no spinning on it. */
        int found = held ? 0 : SPIN_UNTIL(r, LOAD(&h->shutdown) ||
                               (is_worker ? LOAD(&p->q_head) || LOAD(&h->evict) ||
                                            shared_work_fits(r, p)
                                          : nri_actor_has_work(r, p)), spin_ns);

        nr_lock(r);                      /* one section: stop spinning and take */
        nri_set_spinning(r, p, 0);
        if (h->shutdown) { nr_unlock(r); return 0; }
        held = 0;
        t = take_locked(r, slot, &w, &held);
        if (t) {
            nr_unlock(r);
            nri_flush(r, &w);
            return t;
        }
        if (found) { nr_unlock(r); nri_flush(r, &w); continue; }   /* taken by another: again */
        if (nr_actor_should_exit(p)) { nr_unlock(r); return -2; }
        if (evicted_locked(r, p, &w)) { nr_unlock(r); nri_flush(r, &w); return -1; }
        W(p->sleeping, 1);
        if (is_worker) {                 /* only pool workers take shared work */
            W(p->sleep_next, h->sleep_head);
            W(h->sleep_head, slot + 1);
            WINC(h->nsleeping);
        }
        uint32_t seen = LOAD(&p->wake);
        nr_unlock(r);

        /* A worker of a runtime_env retires sooner, as Ray's do (about 1 s):
         * it serves one environment only.  One held back from plain work
         * looks again soon (the task it leaves room for may be cancelled,
         * with no one to wake it). */
        int64_t tmo = idle_timeout_ns;
        if (nri_env_keyed(p) && tmo > NR_ENV_IDLE_NS) tmo = NR_ENV_IDLE_NS;
        if (held) tmo = NR_HELD_POLL_NS;
        int timed_out = nr_futex_wait(&p->wake, seen, tmo);

        nr_lock(r);
        if (p->sleeping) {               /* timed out or woke spuriously */
            if (is_worker) nri_sleepers_remove(r, slot);
            W(p->sleeping, 0);
            /* Beyond the pool's floor of plain workers; a worker of a
             * runtime_env always (it is never part of the floor: one that
             * took a starting floor worker's place is replaced by a fresh
             * one, nr_spawn_take). */
            int surplus = nri_env_keyed(p) || h->nworkers - h->nenv_workers > h->min_workers;
            if (timed_out && !held && is_worker && surplus && !p->q_head) {
                retire_locked(r, p, &w);
                nr_unlock(r);
                nri_flush(r, &w);
                return -1;               /* surplus worker retires */
            }
        }
        nr_unlock(r);
    }
}

int64_t nr_task_finish_try_next(nr_region_t *r, uint32_t slot, uint32_t done) {
    return nr_task_seal_finish_try_next(r, slot, done, 0, 0, 0);
}

int64_t nr_task_seal_finish_try_next(nr_region_t *r, uint32_t slot, uint32_t done, uint64_t id,
                                     uint64_t data, uint64_t size) {
    wakeups_t w = {0};
    int held = 0;
    uint32_t t = 0;
    nr_lock(r);
    if (id && nri_object_seal(r, id, data, size, 0, &w) != 0) {
        nr_arena_written(r, data);
        nr_arena_free_locked(r, data);   /* not sealed with it: the block goes back */
    }
    if (done) finish_locked(r, slot, done, &w, 1);
    if (!r->hdr->shutdown) t = take_locked(r, slot, &w, &held);
    else if (nr_proc(r, slot)->kind == NR_KIND_WORKER && done)
        nri_set_state(r, nr_proc(r, slot), NR_PROC_IDLE);            /* no take: the stay ends */
    nr_unlock(r);
    nri_flush(r, &w);
    return t;
}

/* The same, for a pool worker that is to leave (max_calls): instead of
 * taking the next task it retires in that section (-1), unless tasks are
 * routed to it alone; then it takes one (or 0) and tries again after it. */
int64_t nr_task_seal_finish_retire(nr_region_t *r, uint32_t slot, uint32_t done, uint64_t id,
                                   uint64_t data, uint64_t size) {
    wakeups_t w = {0};
    int held = 0;
    int64_t t = 0;
    nr_proc_t *p = nr_proc(r, slot);
    nr_lock(r);
    if (id && nri_object_seal(r, id, data, size, 0, &w) != 0) {
        nr_arena_written(r, data);
        nr_arena_free_locked(r, data);
    }
    if (done) finish_locked(r, slot, done, &w, 0);
    if (r->hdr->shutdown) {
        t = 0;
    } else if (p->kind == NR_KIND_WORKER && !p->q_head) {
        retire_locked(r, p, &w);
        t = -1;
    } else {
        t = take_locked(r, slot, &w, &held);
    }
    nr_unlock(r);
    nri_flush(r, &w);
    return t;
}

int64_t nr_task_try_next(nr_region_t *r, uint32_t slot) {
    wakeups_t w = {0};
    int held = 0;
    nr_lock(r);
    uint32_t t = take_locked(r, slot, &w, &held);
    nr_unlock(r);
    nri_flush(r, &w);
    return t;
}

/* Drops what a task held: argument refs, its spec, its entry. */
void nri_release(nr_region_t *r, uint32_t t) {
    nr_header_t *h = r->hdr;
    nr_task_t *task = nr_task(r, t);
    nr_spec_t *s = spec_of(r, task);
    uint64_t *ids = nr_spec_ids(s);
    for (uint32_t i = s->nret; i < s->nret + s->ndeps + s->ncontained; i++) nri_decref(r, ids[i]);
    if (s->func_id) nri_decref(r, s->func_id);
    if (s->args_obj) nri_decref(r, s->args_obj);
    nr_arena_free_keep_locked(r, task->spec);
    W(task->spec, 0);
    W(task->state, NR_TASK_FREE);
    WINC(task->gen);
    W(task->next, h->task_free);
    W(h->task_free, t);
    WDEC(h->ntasks);
}

void nr_task_finish(nr_region_t *r, uint32_t slot, uint32_t t) {
    wakeups_t w = {0};
    nr_lock(r);
    finish_locked(r, slot, t, &w, 0);
    nr_unlock(r);
    nri_flush(r, &w);
}

void nr_task_release(nr_region_t *r, uint32_t t) {
    nr_lock(r);
    nri_release(r, t);
    nr_unlock(r);
}

int nr_task_retry(nr_region_t *r, uint32_t t) {
    wakeups_t w = {0};
    nr_lock(r);
    nr_task_t *task = nr_task(r, t);
    int ok = task->retries_left != 0;
    if (ok) {
        if (task->retries_left > 0) WDEC(task->retries_left);
        W(task->proc, 0);
        nri_enqueue(r, t, &w);
    }
    nr_unlock(r);
    nri_flush(r, &w);
    return ok;
}

void nr_shutdown(nr_region_t *r) {
    nr_header_t *h = r->hdr;
    nr_lock(r);
    STORE(&h->shutdown, 1);
    for (uint32_t i = 0; i < h->max_procs; i++) {
        nr_proc_t *p = nr_proc(r, i);
        if (p->state != NR_PROC_FREE) { ADD(&p->wake, 1); W(p->sleeping, 0); }
    }
    W(h->sleep_head, 0);
    W(h->nsleeping, 0);
    nr_unlock(r);
    for (uint32_t i = 0; i < h->max_procs; i++)
        if (nr_proc(r, i)->state != NR_PROC_FREE) nr_futex_wake(&nr_proc(r, i)->wake, INT_MAX);
    nri_wake_all_groups(h);
    nr_wake_object_waiters(r);
}

void nr_stats(nr_region_t *r, nr_stats_t *s) {
    nr_header_t *h = r->hdr;
    nr_lock(r);
    s->nobjects = h->nobjects; s->ntasks = h->ntasks; s->rq_len = h->rq_len;
    s->xq_len = h->xq_len;
    s->nworkers = h->nworkers; s->nsleeping = h->nsleeping; s->nstarting = h->nstarting;
    s->nidle = h->nidle;
    s->nblocked = h->nblocked;
    s->nbusy = h->nbusy;
    s->ncpu = h->ncpu;
    s->max_workers = h->max_workers;
    s->nspinning = h->nspinning;
    s->cpus_total = h->cpus_total; s->cpus_avail = h->cpus_avail;
    s->arena_used = h->arena.used - h->arena.cached;
    s->arena_nallocs = h->arena.nallocs - h->arena.ncached;
    s->arena_brk = h->arena.brk - h->arena_off; s->arena_peak = h->arena.peak - h->arena_off;
    s->arena_size = h->arena.end - h->arena_off;
    s->repairs = h->repairs;
    s->nactors = h->nactors;
    s->lock_stalls = h->lock_stalls;
    s->spilled_objects = h->nspilled;
    s->spilled_bytes = h->spilled_bytes;
    s->spills = h->spills;
    s->restores = h->restores;
    nr_unlock(r);
}
