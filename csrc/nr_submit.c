/* nr_submit: a task enters the region: its entry from the free list, its
 * return objects, the counts it holds, its dependency links, and the queue
 * once nothing is pending.  Taking, running and finishing tasks: nr_sched.c. */
#include "nr_internal.h"
#include "nr_prefault.h"

static uint32_t submit_locked(nr_region_t *r, uint64_t spec, int32_t cpus, int32_t retries,
                              uint32_t target_slot1, const int32_t *res, uint64_t pool,
                              uint64_t env, uint64_t *ret_out, wakeups_t *w);

/* Whether every table has room for the task of spec s. */
static inline int room_for(nr_header_t *h, const nr_spec_t *s) {
    return !((!h->task_free && h->task_hwm >= h->max_tasks) ||
             h->max_objects - h->nobjects < s->nret || h->max_deps - h->ndeps_live < s->ndeps);
}

uint32_t nr_task_submit(nr_region_t *r, uint64_t spec, int32_t cpus, int32_t retries,
                        uint32_t target_slot1, const int32_t *res, uint64_t pool,
                        uint64_t env, uint64_t *ret_out) {
    wakeups_t w = {0};
    nr_lock(r);
    /* Check every table first, so a full one fails cleanly and takes nothing. */
    if (!room_for(r->hdr, (nr_spec_t *)(r->base + spec))) {
        nr_unlock(r);
        return 0;
    }
    nr_arena_written(r, spec);
    uint32_t t = submit_locked(r, spec, cpus, retries, target_slot1, res, pool, env, ret_out, &w);
    nr_unlock(r);
    nri_flush(r, &w);
    return t;
}

uint32_t nr_task_submit_copy(nr_region_t *r, const void *spec, uint64_t size, int32_t cpus,
                             int32_t retries, uint32_t target_slot1, const int32_t *res,
                             uint64_t pool, uint64_t env, uint64_t *ret_out) {
    wakeups_t w = {0};
    nr_lock(r);
    uint64_t off = 0;
    if (room_for(r->hdr, (const nr_spec_t *)spec)) off = nr_arena_alloc_small_locked(r, size);
    if (!off) {
        nr_unlock(r);
        return 0;
    }
    memcpy(r->base + off, spec, size);   /* a fresh block: undone by freeing it */
    uint32_t t = submit_locked(r, off, cpus, retries, target_slot1, res, pool, env, ret_out, &w);
    nr_unlock(r);
    nri_flush(r, &w);
    nr_prefault_kick(r);
    return t;
}

static uint32_t submit_locked(nr_region_t *r, uint64_t spec, int32_t cpus, int32_t retries,
                              uint32_t target_slot1, const int32_t *res, uint64_t pool,
                              uint64_t env, uint64_t *ret_out, wakeups_t *w) {
    nr_header_t *h = r->hdr;
    nr_spec_t *s = (nr_spec_t *)(r->base + spec);
    uint64_t *ids = nr_spec_ids(s);
    uint32_t t;
    if (h->task_free) {
        t = h->task_free;
        W(h->task_free, nr_task(r, t)->next);
    } else {
        t = h->task_hwm + 1;
        nr_task(r, t)->gen = 1;          /* past the high-water mark: nothing reads it */
        W(h->task_hwm, t);
    }
    nr_task_t *task = nr_task(r, t);     /* free: plain stores (see nr_undo.h) */
    WINC(h->ntasks);
    task->spec = spec;
    task->cpus = cpus;
    task->retries_left = retries;
    task->proc = 0;
    task->target = target_slot1;
    task->attempts = 0;
    task->deps_left = 0;
    W(task->next, 0);                    /* its free-list link until committed */
    task->kind = s->kind;
    task->in_queue = 0;
    uint32_t sk = nr_proc(r, r->slot)->kind;
    task->nested = sk == NR_KIND_WORKER || sk == NR_KIND_ACTOR;
    task->caller = r->slot + 1;
    task->fail_obj = 0;
    task->cancelled = 0;
    task->res_mask = 0;                  /* res[] is read only where its bit is set */
    task->gpu_mask = 0;
    task->pool = (uint32_t)pool;
    task->pool_gen = (uint32_t)(pool >> 32);
    task->env = env & ~NR_ENV_SET;
    for (uint32_t k = 1; res && k < NR_RES; k++) {
        task->res[k] = res[k] > 0 ? res[k] : 0;
        if (task->res[k]) task->res_mask |= 1u << k;
    }
    W(task->state, NR_TASK_WAITING);
    if (s->kind == NR_SPEC_ACTOR_CREATE && target_slot1)
        W(nr_proc(r, target_slot1 - 1)->create_task, t);
    /* The caller gets the return ids from here: once the lock is released
     * the task may run, finish and free its spec before the caller looks. */
    for (uint32_t i = 0; i < s->nret; i++) {
        ids[i] = ret_out[i] = nri_obj_alloc(r);
        W(objs(r)[nr_id_index1(ids[i]) - 1].task, t);   /* logged: it was the free-list link */
    }
    if (s->func_id) nri_incref(r, s->func_id);
    if (s->args_obj) nri_incref(r, s->args_obj);
    for (uint32_t i = s->nret + s->ndeps; i < s->nret + s->ndeps + s->ncontained; i++)
        nri_incref(r, ids[i]);
    for (uint32_t i = s->nret; i < s->nret + s->ndeps; i++) {
        nr_object_t *o = nr_object_lookup(r, ids[i]);
        if (!o) continue;                       /* stale: the worker reports it */
        LADD64(o->refs, 1);
        if (o->state != NR_OBJ_PENDING) continue;
        uint32_t d;
        if (h->dep_free) { d = h->dep_free; W(h->dep_free, deps(r)[d - 1].next); }
        else { d = h->dep_hwm + 1; W(h->dep_hwm, d); }
        WINC(h->ndeps_live);
        W(deps(r)[d - 1].dep_task, t);
        W(deps(r)[d - 1].next, o->dep_head);
        W(o->dep_head, d);
        WINC(task->deps_left);
    }
    if (task->deps_left == 0) nri_enqueue(r, t, w);
    else if (s->kind == NR_SPEC_ACTOR_CALL) nri_actor_hold_place(r, t);
    return t;
}
