/* nr_proc: process slots through their life -- allocated, started, blocked
 * in get() and back, reaped when they die (their ledger, blocks and task
 * given back), and the zygote's spawn requests.  The scheduler proper
 * (queues, taking and finishing tasks) is nr_sched.c. */
#define _GNU_SOURCE
#include "nr_sched.h"
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "nr_internal.h"

int nr_proc_alloc(nr_region_t *r, uint32_t kind) {
    nr_lock(r);
    int slot = -1;
    for (uint32_t i = 0; i < r->hdr->max_procs; i++) {
        nr_proc_t *p = nr_proc(r, i);
        if (p->state == NR_PROC_FREE) {
            nri_proc_reset(r, p, kind, NR_PROC_STARTING);
            if (kind == NR_KIND_WORKER) {    /* counted as nr_spawn_take counts them */
                WINC(r->hdr->nworkers);
                WINC(r->hdr->nstarting);
            }
            slot = (int)i;
            break;
        }
    }
    nr_unlock(r);
    return slot;
}

void nr_proc_started(nr_region_t *r, uint32_t slot, int32_t pid) {
    nr_lock(r);
    nr_proc_t *p = nr_proc(r, slot);
    W(p->pid, pid);
    if (p->state == NR_PROC_STARTING) {
        nri_set_state(r, p, NR_PROC_IDLE);
        if (p->kind == NR_KIND_WORKER && r->hdr->nstarting) WDEC(r->hdr->nstarting);
    }
    nr_unlock(r);
}

void nr_proc_block(nr_region_t *r, uint32_t slot) {
    wakeups_t w = {0};
    nr_lock(r);
    nr_proc_t *p = nr_proc(r, slot);
    nri_set_state(r, p, NR_PROC_BLOCKED);
    nri_acct_t a = nri_acct(r, p->pool, p->pool_gen);   /* its CPUs are lent where they came from */
    WADD(*a.cpus, p->cpus_held);
    if (a.pg && p->cpus_held) WINC(r->hdr->xq_gen);
    nri_kick(r, &w);
    nr_unlock(r);
    nri_flush(r, &w);
}

int nr_stuck(nr_region_t *r) {
    nr_header_t *h = r->hdr;
    nr_lock(r);
    int queued = h->rq_len || (nri_xq_any(h) && nri_xq_first_fit(r, NULL, 0, 1));
    int stuck = queued && h->nworkers >= h->max_workers && h->nblocked == h->nworkers;
    /* A process whose task waits with a timeout will move on by itself; an
     * actor running or holding calls may seal what the workers wait for. */
    for (uint32_t i = 0; stuck && i < h->proc_hwm; i++) {
        nr_proc_t *p = nr_proc(r, i);
        if (p->kind == NR_KIND_WORKER && p->state == NR_PROC_BLOCKED && p->may_progress) stuck = 0;
        if (p->kind == NR_KIND_ACTOR && p->state != NR_PROC_EXITED && p->state != NR_PROC_FREE &&
            (p->nrunning || p->q_head))
            stuck = 0;
    }
    nr_unlock(r);
    return stuck;
}

void nr_proc_may_progress(nr_region_t *r, uint32_t slot, int on) {
    nr_lock(r);
    W(nr_proc(r, slot)->may_progress, (uint32_t)on);
    nr_unlock(r);
}

void nr_proc_unblock(nr_region_t *r, uint32_t slot) {
    nr_lock(r);
    nr_proc_t *p = nr_proc(r, slot);
    nri_acct_t a = nri_acct(r, p->pool, p->pool_gen);
    W(*a.cpus, *a.cpus - p->cpus_held);        /* may dip below zero until it finishes */
    nri_set_state(r, p, NR_PROC_RUNNING);
    nr_unlock(r);
}

static int stream_cell_of(nr_region_t *r, nr_task_t *t, uint32_t kind, nr_object_t *o) {
    if (t->kind != kind || !t->spec) return 0;   /* cancelled too: its cell fails with the
                                                  * death's error (a cancelled call is not
                                                  * re-run), not as a bare crash */
    uint64_t cell = spec_of(r, t)->stream_cell;
    return cell && nr_object_lookup(r, cell) == o;
}

/* Whether o is the pending cell of a streaming generator the dead process
 * was running (a pool worker's task, or one of an actor's calls): it is
 * left to what follows the death, which runs it again to resume there
 * (nr_stream_seal) or fails the cell with the death's error (lost_task;
 * nr_actor_reap and fail_task). */
static int resumed_cell(nr_region_t *r, nr_proc_t *p, uint32_t slot, nr_object_t *o) {
    if (p->kind == NR_KIND_WORKER)
        return p->task && stream_cell_of(r, nr_task(r, p->task), NR_SPEC_TASK, o);
    if (p->kind != NR_KIND_ACTOR) return 0;
    for (uint32_t t = 1; t <= r->hdr->task_hwm; t++) {   /* a death, rare: a scan will do */
        nr_task_t *task = nr_task(r, t);
        if (task->state == NR_TASK_RUNNING && task->proc == slot + 1 &&
            stream_cell_of(r, task, NR_SPEC_ACTOR_CALL, o))
            return 1;
    }
    return 0;
}

void nri_ledger_release(nr_region_t *r, uint32_t slot, wakeups_t *w) {
    nr_proc_t *p = nr_proc(r, slot);
    int32_t *ledger = nr_ledger(r, slot);
    uint32_t n = p->ledger_hwm;
    if (n > r->hdr->max_objects) n = r->hdr->max_objects;
    for (uint32_t i = 0; i < n; i++) {
        int32_t c = ledger[i];
        if (!c) continue;
        W(ledger[i], 0);
        nr_object_t *o = objs(r) + i;
        if (o->state == NR_OBJ_FREE || c <= 0) {           /* never: counts pin the entry */
            nr_undo_commit(r);
            continue;
        }
        if (o->state == NR_OBJ_PENDING && o->creator == slot + 1) {
            if (resumed_cell(r, p, slot, o))
                W(o->creator, 0);        /* the re-run's now: not a later process's in this slot */
            else
                nri_seal(r, o, 0, 0, 1, w);   /* it died before sealing it: no payload, an error */
        }
        if (LADD64(o->refs, -(int64_t)c) == 0 && o->state != NR_OBJ_PENDING) nri_obj_free(r, o);
        nr_undo_commit(r);               /* one entry per step: see the caller */
    }
    p->ledger_hwm = 0;                   /* not logged: a high-water mark may stay high */
}

uint32_t nr_proc_reap(nr_region_t *r, uint32_t slot) {
    nr_header_t *h = r->hdr;
    wakeups_t w = {0};
    nr_lock(r);
    nri_release_drain(r, slot);          /* the frees it put off (commits each) */
    nri_ledger_release(r, slot, &w);     /* first: it commits as it goes */
    nri_born_reap(r, slot);              /* its arrays' blocks (commits too) */
    nr_arena_release_writing(r, slot);
    nri_spill_release(r, slot);
    nr_proc_t *p = nr_proc(r, slot);
    uint32_t t = p->task;
    /* A pool worker that died (one that retired ends its actors' owner no
     * more than an idle one would): the actors its tasks created go. */
    if (p->kind == NR_KIND_WORKER && p->state != NR_PROC_EXITED)
        nri_actor_owner_gone(r, slot, p->pid, &w);
    if (p->kind == NR_KIND_WORKER) {     /* an actor's: nr_actor_reap */
        if (p->state != NR_PROC_RUNNING) W(p->cpus_held, 0);   /* lent while it blocked */
        nri_release_held(r, p);
    }
    if (p->state == NR_PROC_STARTING && p->kind == NR_KIND_WORKER && h->nstarting) WDEC(h->nstarting);
    if (p->sleeping && p->kind == NR_KIND_WORKER) nri_sleepers_remove(r, slot);
    nri_set_spinning(r, p, 0);
    if (p->kind == NR_KIND_WORKER && p->state != NR_PROC_EXITED && h->nworkers) {
        WDEC(h->nworkers);
        if (nri_env_keyed(p) && h->nenv_workers) WDEC(h->nenv_workers);
    }
    if (t) W(nr_task(r, t)->proc, 0);
    /* Tasks routed to this process stay queued on it; the language layer
     * fails them (an actor that will not restart). */
    nri_set_state(r, p, p->q_head ? NR_PROC_EXITED : NR_PROC_FREE);
    W(p->task, 0);
    W(p->cpus_held, 0);
    W(p->sleeping, 0);
    nri_kick(r, &w);
    nr_unlock(r);
    nri_flush(r, &w);
    return t;
}

int nr_spawn_take(nr_region_t *r, uint32_t *out, int max_out) {
    nr_header_t *h = r->hdr;
    nr_lock(r);
    W(h->spawn_pending, 0);
    int want = 0;
    if (h->nworkers < h->min_workers) want = (int)(h->min_workers - h->nworkers);
    /* Beyond the pool's floor, only when runnable work finds no worker idle
     * or starting (the same rule as maybe_spawn_locked), and no more than
     * the free CPUs can run at once. */
    if (nri_dispatchable(r) && !h->nidle && !h->nstarting) {
        int extra = h->cpus_avail / 1000 > 1 ? h->cpus_avail / 1000 : 1;
        int runnable = (int)h->rq_len + (nri_xq_any(h) && nri_xq_first_fit(r, NULL, 0, 1) ? 1 : 0);
        if (extra > runnable) extra = runnable;
        if (extra > want) want = extra;
    }
    if (h->spawn_fresh) {                /* work no idle worker's runtime_env allows */
        W(h->spawn_fresh, 0);
        if (!want && !h->nstarting && nri_dispatchable(r)) want = 1;
    }
    if (want > (int)(h->max_workers - h->nworkers)) want = (int)(h->max_workers - h->nworkers);
    if (want > max_out) want = max_out;
    int n = 0;
    for (uint32_t i = 1; i < h->max_procs && n < want; i++) {
        nr_proc_t *p = nr_proc(r, i);
        if (p->state != NR_PROC_FREE) continue;
        nri_proc_reset(r, p, NR_KIND_WORKER, NR_PROC_STARTING);
        out[n++] = i;
    }
    WADD(h->nworkers, (uint32_t)n);
    WADD(h->nstarting, (uint32_t)n);
    /* Actors waiting for a process (new, or restarting). */
    for (uint32_t i = 1; i < h->max_procs && n < max_out && h->nactors; i++) {
        nr_proc_t *p = nr_proc(r, i);
        if (p->kind == NR_KIND_ACTOR && p->spawn_req) {
            W(p->spawn_req, 0);
            out[n++] = i;
        }
    }
    nr_unlock(r);
    return n;
}

/* The zygote could not start a process for a slot nr_spawn_take gave it
 * (fork failed: ENOMEM, EAGAIN).  A worker slot is freed and no longer
 * counted as starting, an actor's request is armed again: the next
 * nr_spawn_take asks for both again, so no request is lost. */
void nr_spawn_giveback(nr_region_t *r, uint32_t slot) {
    nr_header_t *h = r->hdr;
    nr_lock(r);
    nr_proc_t *p = nr_proc(r, slot);
    if (p->state == NR_PROC_STARTING && !p->pid) {
        if (p->kind == NR_KIND_WORKER) {
            if (h->nstarting) WDEC(h->nstarting);
            if (h->nworkers) WDEC(h->nworkers);
            nri_set_state(r, p, NR_PROC_FREE);
        } else if (p->kind == NR_KIND_ACTOR) {
            W(p->spawn_req, 1);
        }
    }
    nr_unlock(r);
}
