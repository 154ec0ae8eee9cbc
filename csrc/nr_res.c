/* nr_res: resources beyond CPUs (GPUs, memory, custom), and giving back what
 * a process holds to the account it came from (the machine's, or a placement
 * group's: nri_acct).  Tasks, queues and processes: nr_sched.c.
 *
 * A task needing any (or more CPUs than exist) waits in the xq, where a
 * worker takes the first one that fits: one that cannot fit yet (or ever,
 * an infeasible task) holds up neither the tasks behind it nor the CPU
 * queues.  Amounts are held by the process running the task (an actor: for
 * its life) and given back when it finishes or dies. */
#include <string.h>

#include "nr_internal.h"

/* The GPU devices `milli` milli-GPUs would get: whole free devices for one
 * or more, else the busiest device with room for the fraction; 0 if none. */
uint32_t nri_pick_gpus(nr_header_t *h, int32_t milli) {
    uint32_t n = LOAD(&h->ngpus), mask = 0;
    if (milli <= 0) return 0;
    if (milli >= 1000) {
        int32_t need = milli / 1000;
        for (uint32_t d = 0; d < n && need; d++)
            if (LOAD(&h->gpu_avail[d]) >= 1000) { mask |= 1u << d; need--; }
        return need ? 0 : mask;
    }
    int best = -1;
    for (uint32_t d = 0; d < n; d++) {
        int32_t a = LOAD(&h->gpu_avail[d]);
        if (a >= milli && (best < 0 || a < LOAD(&h->gpu_avail[best]))) best = (int)d;
    }
    return best < 0 ? 0 : 1u << best;
}

/* Relaxed loads throughout: spinners call these without the lock (a stale
 * answer only costs a look under it). */
static int fits_in(const int32_t *cpus_avail, const int64_t *avail, int32_t cpus, uint32_t mask,
                   const int32_t *res) {
    if (!nri_cpus_fit(cpus, LOAD(cpus_avail))) return 0;
    for (uint32_t k = 1; mask && k < NR_RES; k++)
        if ((mask >> k & 1) && LOAD(&res[k]) > LOAD(&avail[k])) return 0;
    return 1;
}

uint32_t nri_pool_pick(nr_header_t *h, uint32_t pool, uint32_t gen, int32_t cpus, uint32_t mask,
                       const int32_t *res) {
    uint32_t j = (pool & ~NR_POOL_ANY) - 1, n = 1;
    if (j >= NR_MAX_PG) return 0;
    if (pool & NR_POOL_ANY) {            /* the group's bundles, in order, along their chain */
        n = LOAD(&h->pgs[j].nb);
        if (LOAD(&h->pgs[j].head) != j) return 0;
    }
    for (; n-- && j < NR_MAX_PG; j = LOAD(&h->pgs[j].next) - 1) {
        nr_pg_t *g = &h->pgs[j];
        if (LOAD(&g->gen) != gen || LOAD(&g->state) != NR_PG_CREATED) return 0;
        if (fits_in(&g->cpus_avail, g->res_avail, cpus, mask, res)) return j + 1;
    }
    return 0;
}

uint32_t nri_pool_fallback(nr_header_t *h, uint32_t pool, uint32_t gen, int32_t cpus,
                           const int32_t *res) {
    uint32_t j = (pool & ~NR_POOL_ANY) - 1, n, best = 0;
    if (!(pool & NR_POOL_ANY) || j >= NR_MAX_PG) return pool & ~NR_POOL_ANY;
    for (n = h->pgs[j].nb; n-- && j < NR_MAX_PG; j = h->pgs[j].next - 1) {
        nr_pg_t *g = &h->pgs[j];
        if (g->gen != gen || !nri_bundle_holds(g, cpus, res)) continue;
        if (!best || g->cpus_avail > h->pgs[best - 1].cpus_avail) best = j + 1;
    }
    return best ? best : pool & ~NR_POOL_ANY;
}

static int task_fits(nr_header_t *h, nr_task_t *t) {
    uint32_t pool = LOAD(&t->pool), mask = LOAD(&t->res_mask);
    if (pool) {                          /* in a placement group: a bundle's reservation */
        if (!nri_pool_pick(h, pool, LOAD(&t->pool_gen), LOAD(&t->cpus), mask, t->res)) return 0;
    } else if (!fits_in(&h->cpus_avail, h->res_avail, LOAD(&t->cpus), mask, t->res)) {
        return 0;
    }
    return !(mask >> NR_RES_GPU & 1) || nri_pick_gpus(h, LOAD(&t->res[NR_RES_GPU])) != 0;
}

/* The first task in one xq list that fits now (and, if p is given, that p
 * may run); with `take`, unlinked.  *n counts the entries looked at,
 * *skipped whether some were not p's. */
static uint32_t list_first_fit(nr_region_t *r, nr_proc_t *p, uint32_t *head, uint32_t *tail,
                               int take, int locked, uint32_t *n, uint32_t *skipped) {
    nr_header_t *h = r->hdr;
    uint32_t prev = 0;
    for (uint32_t t = LOAD(head); t; prev = t, t = LOAD(&nr_task(r, t)->next)) {
        if (t > LOAD(&h->task_hwm) || (!locked && ++*n > 16)) return 0;
        nr_task_t *task = nr_task(r, t);
        if (!task_fits(h, task)) continue;
        if (p && !nri_env_ok(p, LOAD(&task->env))) { *skipped = 1; continue; }   /* not p's */
        if (take) {
            if (prev) W(nr_task(r, prev)->next, task->next); else W(*head, task->next);
            if (*tail == t) W(*tail, prev);
            WDEC(h->xq_len);
        }
        return t;
    }
    return 0;
}

/* The first task in the xq that fits now (0: none); with `take`, unlinked
 * (under the lock).  Nested tasks are looked at first, as in the plain
 * queues (next_queue): the children of a task blocked in get() run before
 * queued top-level tasks, so a fan-out stays within a few workers; after
 * NR_NESTED_STREAK nested ones in a row, the top-level list has a turn.
 * Without the lock it looks at the first 16 only. */
uint32_t nri_xq_first_fit(nr_region_t *r, nr_proc_t *p, int take, int locked) {
    nr_header_t *h = r->hdr;
    uint32_t n = 0, skipped = 0, t;
    /* Nothing fitted last time, and nothing that could change that has
     * happened since: no scan (tasks waiting here cost nothing per kick);
     * the same for what was not p's runtime_env's. */
    if (locked && h->xq_miss && h->xq_miss_gen == h->xq_gen && h->cpus_avail <= h->xq_miss_cpus)
        return 0;
    if (locked && p && h->xq_emiss && h->xq_emiss_gen == h->xq_gen &&
        h->cpus_avail <= h->xq_emiss_cpus && h->xq_emiss_env == p->env)
        return 0;
    int top_turn = LOAD(&h->xq_nstreak) >= NR_NESTED_STREAK;
    for (int pass = 0; pass < 2; pass++) {
        int nested = pass == top_turn;
        t = nested ? list_first_fit(r, p, &h->xnq_head, &h->xnq_tail, take, locked, &n, &skipped)
                   : list_first_fit(r, p, &h->xq_head, &h->xq_tail, take, locked, &n, &skipped);
        if (t) {
            if (take) W(h->xq_nstreak, nested ? h->xq_nstreak + 1 : 0);
            return t;
        }
    }
    if (!locked) return 0;
    if (!skipped) {                      /* none fits anyone (not just none is p's) */
        W(h->xq_miss, 1);
        W(h->xq_miss_gen, h->xq_gen);
        W(h->xq_miss_cpus, h->cpus_avail);
    } else if (p) {                      /* none is p's: for workers of its environment */
        W(h->xq_emiss, 1);
        W(h->xq_emiss_gen, h->xq_gen);
        W(h->xq_emiss_cpus, h->cpus_avail);
        W(h->xq_emiss_env, p->env);
    }
    return 0;
}

void nri_res_take(nr_region_t *r, nr_proc_t *p, nri_acct_t a, uint32_t mask,
                     const int32_t *res, uint32_t gpus) {
    nr_header_t *h = r->hdr;
    for (uint32_t k = 1; k < NR_RES; k++) {
        if (!(mask >> k & 1)) continue;
        W(a.res[k], a.res[k] - res[k]);
        W(p->res_held[k], res[k]);
    }
    int32_t each = res[NR_RES_GPU] >= 1000 ? 1000 : res[NR_RES_GPU];
    for (uint32_t d = 0; d < h->ngpus; d++)
        if (gpus >> d & 1) W(h->gpu_avail[d], h->gpu_avail[d] - each);
    W(p->res_mask, mask);
    W(p->gpu_mask, gpus);
}

void nri_res_release(nr_region_t *r, nr_proc_t *p) {
    nr_header_t *h = r->hdr;
    if (!p->res_mask) return;
    WINC(h->xq_gen);                     /* a task waiting for these may fit now */
    nri_acct_t a = nri_acct(r, p->pool, p->pool_gen);
    int32_t each = p->res_held[NR_RES_GPU] >= 1000 ? 1000 : p->res_held[NR_RES_GPU];
    for (uint32_t d = 0; d < h->ngpus; d++)
        if (p->gpu_mask >> d & 1) WADD(h->gpu_avail[d], each);
    for (uint32_t k = 1; k < NR_RES; k++) {
        if (!(p->res_mask >> k & 1)) continue;
        WADD(a.res[k], p->res_held[k]);
        W(p->res_held[k], 0);
    }
    W(p->res_mask, 0);
    W(p->gpu_mask, 0);
}

/* An actor's resources, held for its life from its creation (as its CPUs
 * are): the devices it fits on, else (oversubscribed) the freest ones. */
void nri_res_take_actor(nr_region_t *r, nr_proc_t *p, nri_acct_t a, uint32_t mask,
                        const int32_t *res) {
    nr_header_t *h = r->hdr;
    uint32_t gpus = 0;
    if (mask >> NR_RES_GPU & 1) {
        gpus = nri_pick_gpus(h, res[NR_RES_GPU]);
        int32_t need = res[NR_RES_GPU] >= 1000 ? res[NR_RES_GPU] / 1000 : 1;
        if (!gpus) {                            /* none fit: the `need` freest devices */
            for (; need > 0; need--) {
                int best = -1;
                for (uint32_t d = 0; d < h->ngpus; d++)
                    if (!(gpus >> d & 1) && (best < 0 || h->gpu_avail[d] > h->gpu_avail[best]))
                        best = (int)d;
                if (best < 0) break;
                gpus |= 1u << best;
            }
        }
    }
    nri_res_take(r, p, a, mask, res, gpus);
}

/* Gives back the CPUs and other resources process p holds (a task's, or an
 * actor's), to the placement group they came from if it is still there. */
void nri_release_held(nr_region_t *r, nr_proc_t *p) {
    nri_acct_t a = nri_acct(r, p->pool, p->pool_gen);
    WADD(*a.cpus, p->cpus_held);
    if (a.pg && p->cpus_held) WINC(r->hdr->xq_gen);   /* the node's CPU count did not move */
    W(p->cpus_held, 0);
    nri_res_release(r, p);
    if (p->pool) {
        W(p->pool, 0);
        W(p->pool_gen, 0);
    }
}

int nr_resource_define(nr_region_t *r, uint32_t k, const char *name, int64_t total) {
    nr_header_t *h = r->hdr;
    if (k == 0 || k >= NR_RES || total < 0) return -1;
    nr_lock(r);
    nr_undo_bytes(r, h->res_names[k], NR_RES_NAME);
    memset(h->res_names[k], 0, NR_RES_NAME);
    strncpy(h->res_names[k], name, NR_RES_NAME - 1);
    W(h->res_total[k], total);
    W(h->res_avail[k], total);
    if (k == NR_RES_GPU) {
        W(h->ngpus, (uint32_t)(total / 1000) < NR_MAX_GPUS ? (uint32_t)(total / 1000) : NR_MAX_GPUS);
        for (uint32_t d = 0; d < NR_MAX_GPUS; d++) W(h->gpu_avail[d], d < h->ngpus ? 1000 : 0);
    }
    nr_unlock(r);
    return 0;
}

void nr_resources(nr_region_t *r, int64_t *total, int64_t *avail) {
    nr_header_t *h = r->hdr;
    nr_lock(r);
    total[0] = h->cpus_total;
    avail[0] = h->cpus_avail;
    for (uint32_t k = 1; k < NR_RES; k++) { total[k] = h->res_total[k]; avail[k] = h->res_avail[k]; }
    nr_unlock(r);
}

