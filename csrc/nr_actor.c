#define _GNU_SOURCE
#include "nr_internal.h"
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>


static inline nr_name_t *names(nr_region_t *r) { return (nr_name_t *)(r->base + r->hdr->names_off); }

static int slot_is(nr_region_t *r, uint32_t slot, uint32_t gen) {
    if (slot >= r->hdr->max_procs) return 0;
    nr_proc_t *p = nr_proc(r, slot);
    return p->kind == NR_KIND_ACTOR && p->gen == gen && p->state != NR_PROC_FREE;
}

/* A name holds a count on the handle object: a named actor lives on
 * without handles, until it dies or is killed. */
static void names_remove(nr_region_t *r, uint32_t slot) {
    nr_name_t *n = names(r);
    for (uint32_t i = 0; i < r->hdr->max_names; i++) {
        if (!n[i].handle_obj || n[i].slot1 != slot + 1) continue;
        uint64_t h = n[i].handle_obj;
        nr_undo_bytes(r, &n[i], sizeof n[i]);
        memset(&n[i], 0, sizeof n[i]);
        nri_decref(r, h);                    /* may orphan the actor: nothing left names it */
    }
}

/* Drops the creation task: released, or, while it still waits for its
 * arguments (dependency links point at it), marked cancelled so that it is
 * released when they are ready and never runs. */
static void drop_create_task(nr_region_t *r, nr_proc_t *p) {
    uint32_t c = p->create_task;
    if (!c) return;
    W(p->create_task, 0);
    nr_task_t *task = nr_task(r, c);
    if (task->state == NR_TASK_WAITING && task->deps_left) {
        W(task->kind, NR_SPEC_CANCELLED);
        W(task->target, 0);
        return;
    }
    nri_release(r, c);
}

/* Zeroes the per-caller counts of held calls (all are zero but a few). */
static void held_clear(nr_region_t *r, uint32_t slot) {
    uint16_t *c = nr_held_counts(r, slot);
    for (uint32_t i = 0; i <= r->hdr->max_procs; i++)
        if (c[i]) W(c[i], 0);
}

/* The slot goes back to the pool; its generation moves on. */
static void free_slot(nr_region_t *r, uint32_t slot) {
    nr_proc_t *p = nr_proc(r, slot);
    names_remove(r, slot);
    if (p->create_ready == p->create_task) W(p->create_ready, 0);
    drop_create_task(r, p);
    uint64_t death = p->death_obj;
    nri_pin(r, death, -1);
    held_clear(r, slot);
    WINC(p->gen);
    nri_set_state(r, p, NR_PROC_FREE);      /* counts it out of nbusy if it died running */
    nri_proc_reset(r, p, NR_KIND_NONE, NR_PROC_FREE);
    WDEC(r->hdr->nactors);
    if (death) nri_decref(r, death);
}

/* Seals each pending return of task t with a copy of the death payload,
 * then releases the task. */
/* Seals pending object id with a copy of the error d holds (none: read
 * back as a system error). */
static void fail_object(nr_region_t *r, uint64_t id, nr_object_t *d, wakeups_t *w) {
    nr_object_t *o = nr_object_lookup(r, id);
    if (!o || o->state != NR_OBJ_PENDING) return;
    uint64_t off = 0, size = 0;
    if (d && d->data && d->spill == NR_SPILL_NONE) {   /* pinned: never spilled, but */
        off = nr_arena_alloc_locked(r, d->size);
        if (off) {
            memcpy(r->base + off, r->base + d->data, d->size);
            size = d->size;
        }
    }
    nri_seal(r, o, off, size, 1, w);
    if (LOAD(&o->refs) == 0) nri_obj_free(r, o);
}

static void fail_task(nr_region_t *r, uint32_t t, uint64_t death, wakeups_t *w) {
    nr_task_t *task = nr_task(r, t);
    nr_spec_t *s = spec_of(r, task);
    uint64_t *ids = nr_spec_ids(s);
    nr_object_t *d = death ? nr_object_lookup(r, death) : NULL;
    for (uint32_t i = 0; i < s->nret; i++) fail_object(r, ids[i], d, w);
    if (s->stream_cell) fail_object(r, s->stream_cell, d, w);   /* a re-run generator's */
    W(task->proc, 0);
    nri_release(r, t);
}

void nri_fail_push(nr_region_t *r, uint32_t t, uint64_t death) {
    nr_task_t *task = nr_task(r, t);
    if (death) nri_incref(r, death);
    nri_pin(r, death, 1);
    W(task->fail_obj, death);
    W(task->state, NR_TASK_READY);
    W(task->next, r->hdr->fail_head);
    W(r->hdr->fail_head, t);
}

void nri_fail_one(nr_region_t *r, wakeups_t *w) {
    uint32_t t = r->hdr->fail_head;
    nr_task_t *task = nr_task(r, t);
    uint64_t death = task->fail_obj;
    W(r->hdr->fail_head, task->next);
    fail_task(r, t, death, w);
    nri_pin(r, death, -1);
    if (death) nri_decref(r, death);
}

static inline int ordered(nr_proc_t *p) { return !(p->aflags & NR_ACTOR_UNORDERED); }

static inline uint32_t caller_of(nr_region_t *r, nr_task_t *task) {
    return task->caller <= r->hdr->max_procs ? task->caller : 0;
}

static void queue_append(nr_region_t *r, nr_proc_t *p, uint32_t t) {
    W(nr_task(r, t)->next, 0);
    W(nr_task(r, t)->in_queue, 0);
    if (p->q_tail) W(nr_task(r, p->q_tail)->next, t); else W(p->q_head, t);
    W(p->q_tail, t);
}

static void held_append(nr_region_t *r, nr_proc_t *p, uint32_t slot, uint32_t t) {
    nr_task_t *task = nr_task(r, t);
    W(task->next, 0);
    W(task->in_queue, 1);
    if (p->h_tail) W(nr_task(r, p->h_tail)->next, t); else W(p->h_head, t);
    W(p->h_tail, t);
    WINC(p->q_len);
    if (ordered(p)) WINC(nr_held_counts(r, slot)[caller_of(r, task)]);
}

/* Moves held call t (after prev, 0 if at the head) to the queue's tail. */
static void held_release(nr_region_t *r, nr_proc_t *p, uint32_t slot, uint32_t prev, uint32_t t) {
    nr_task_t *task = nr_task(r, t);
    if (prev) W(nr_task(r, prev)->next, task->next); else W(p->h_head, task->next);
    if (p->h_tail == t) W(p->h_tail, prev);
    if (ordered(p)) WDEC(nr_held_counts(r, slot)[caller_of(r, task)]);
    queue_append(r, p, t);
}

/* Held call t's arguments are ready.  Unordered: it runs.  Ordered: its
 * caller's leading held calls that are ready run (up to the first that
 * still waits, which may be an earlier one). */
static void held_ready(nr_region_t *r, nr_proc_t *p, uint32_t slot, uint32_t t) {
    uint32_t prev = 0, x = p->h_head;
    if (!ordered(p)) {
        while (x && x != t) { prev = x; x = nr_task(r, x)->next; }
        if (x) held_release(r, p, slot, prev, x);
        return;
    }
    uint32_t c = caller_of(r, nr_task(r, t));
    while (x) {
        nr_task_t *task = nr_task(r, x);
        uint32_t next = task->next;
        if (caller_of(r, task) == c) {
            if (task->state != NR_TASK_READY) break;
            held_release(r, p, slot, prev, x);
        } else {
            prev = x;
        }
        x = next;
    }
}

int nri_actor_route(nr_region_t *r, uint32_t t, nr_proc_t *p, uint32_t slot, wakeups_t *w) {
    if (p->kind != NR_KIND_ACTOR) return 0;
    nr_task_t *task = nr_task(r, t);
    if (task->in_queue) {                    /* held: its arguments are ready now */
        W(task->state, NR_TASK_READY);
        held_ready(r, p, slot, t);
        if (p->sleeping && p->q_head) nri_wake_slot(r, p, slot, w);
        return 1;
    }
    if (p->aflags & NR_ACTOR_DEAD) {        /* failed at the end of the section */
        nri_fail_push(r, t, p->death_obj);
        return 1;
    }
    if (task->kind == NR_SPEC_ACTOR_CALL && ordered(p) &&
        nr_held_counts(r, slot)[caller_of(r, task)]) {
        W(task->state, NR_TASK_READY);       /* behind its caller's held calls */
        held_append(r, p, slot, t);
        return 1;
    }
    if (task->kind != NR_SPEC_ACTOR_CREATE) return 0;
    W(task->state, NR_TASK_READY);
    W(p->create_ready, t);
    if (p->sleeping) nri_wake_slot(r, p, slot, w);
    return 1;
}

void nri_actor_hold_place(nr_region_t *r, uint32_t t) {
    nr_task_t *task = nr_task(r, t);
    nr_proc_t *p = nr_proc(r, task->target - 1);
    if (p->kind != NR_KIND_ACTOR || (p->aflags & NR_ACTOR_DEAD)) return;  /* routed when ready */
    held_append(r, p, task->target - 1, t);
}

uint32_t nri_actor_pop(nr_region_t *r, nr_proc_t *p) {
    uint32_t t = p->create_ready;
    if (t) {
        W(p->create_ready, 0);
        return t;
    }
    if (!(p->aflags & NR_ACTOR_CREATED) || (p->aflags & NR_ACTOR_DEAD)) return 0;
    t = p->q_head;                           /* every queued call may run: O(1) */
    if (t) {
        W(p->q_head, nr_task(r, t)->next);
        if (!p->q_head) W(p->q_tail, 0);
        WDEC(p->q_len);
    }
    return t;
}

void nri_actor_finish(nr_region_t *r, nr_proc_t *p, uint32_t t) {
    nr_task_t *task = nr_task(r, t);
    if (p->nrunning) WDEC(p->nrunning);
    if (!p->nrunning) nri_set_state(r, p, NR_PROC_IDLE);
    if (task->kind == NR_SPEC_ACTOR_CREATE) {
        if (!(p->aflags & NR_ACTOR_DEAD)) W(p->aflags, p->aflags | NR_ACTOR_CREATED);
        if (p->restarts_left == 0 || (p->aflags & NR_ACTOR_DEAD)) {
            if (p->create_task == t) W(p->create_task, 0);
            nri_release(r, t);
        } else {                             /* kept, with its arguments, for a restart */
            W(task->state, NR_TASK_WAITING);
            W(task->proc, 0);
        }
        return;
    }
    nri_release(r, t);
}

/* An infeasible actor that never started ends through the usual path: a
 * process starts for it that sees NR_ACTOR_KILLED and exits, and its reap
 * fails its queued calls and frees what is left. */
static int unstarted(nr_proc_t *p) {
    return (p->aflags & NR_ACTOR_INFEASIBLE) && p->state == NR_PROC_STARTING && !p->pid &&
           !p->spawn_req;
}

static int end_unstarted(nr_region_t *r, nr_proc_t *p) {
    if (!unstarted(p)) return 0;
    W(p->aflags, p->aflags | NR_ACTOR_KILLED | NR_ACTOR_NO_RESTART);
    W(p->spawn_req, 1);
    return 1;
}

void nri_actor_orphaned(nr_region_t *r, uint32_t slot1) {
    nr_proc_t *p = nr_proc(r, slot1 - 1);
    if (p->kind != NR_KIND_ACTOR) return;
    W(p->aflags, p->aflags | NR_ACTOR_ORPHANED);
    if ((p->aflags & NR_ACTOR_DEAD) && p->state == NR_PROC_EXITED) {
        free_slot(r, slot1 - 1);             /* a tombstone nobody can name any more */
        return;
    }
    if (end_unstarted(r, p) && r->spawn_fd >= 0) {   /* once per actor, as the wake below */
        uint64_t one = 1;
        ssize_t rc = write(r->spawn_fd, &one, sizeof one);
        (void)rc;
        return;
    }
    /* Its process exits once its queue is empty: wake it to see that.  A
     * system call under the lock, but only once per actor. */
    ADD(&p->wake, 1);
    nr_futex_wake(&p->wake, 1);
}

int nr_actor_create(nr_region_t *r, uint64_t handle_obj, int32_t max_restarts,
                    int32_t cpus_milli, const int32_t *res, uint64_t pool, uint32_t flags,
                    const char *key, uint32_t *gen_out, uint64_t *existing) {
    nr_header_t *h = r->hdr;
    wakeups_t w = {0};
    nr_lock(r);
    nr_name_t *free_name = NULL;
    if (key) {
        nr_name_t *n = names(r);
        for (uint32_t i = 0; i < h->max_names; i++) {
            if (!n[i].handle_obj) { if (!free_name) free_name = &n[i]; continue; }
            if (strncmp(n[i].key, key, NR_NAME_MAX) == 0) {
                *existing = n[i].handle_obj;
                nr_unlock(r);
                return -2;
            }
        }
        if (!free_name) { nr_unlock(r); return -3; }
    }
    int infeasible = (flags & NR_ACTOR_INFEASIBLE) != 0;
    if (infeasible) cpus_milli = 0, res = NULL, pool = 0;   /* it holds nothing */
    if (cpus_milli > h->cpus_total) { nr_unlock(r); return -4; }
    uint32_t res_mask = 0;
    for (uint32_t k = 1; res && k < NR_RES; k++) {
        if (res[k] <= 0) continue;
        if (res[k] > h->res_total[k] || (k == NR_RES_GPU && res[k] > 1000 * (int64_t)h->ngpus)) {
            nr_unlock(r);
            return -5;                       /* more of a resource than the machine has */
        }
        res_mask |= 1u << k;
    }
    nr_object_t *o = nr_object_lookup(r, handle_obj);
    int slot = -1;
    for (uint32_t i = 1; o && i < h->max_procs; i++) {
        nr_proc_t *p = nr_proc(r, i);
        if (p->state != NR_PROC_FREE) continue;
        nri_proc_reset(r, p, NR_KIND_ACTOR, NR_PROC_STARTING);  /* logged: plain stores follow */
        p->aflags = flags & (NR_ACTOR_DETACHED | NR_ACTOR_UNORDERED | NR_ACTOR_INFEASIBLE);
        if (flags & NR_ACTOR_DETACHED) LADD64(o->refs, 1);   /* dropped when it dies */
        p->restarts_left = max_restarts;
        p->handle_obj = handle_obj;
        W(p->owner_slot1, (flags & NR_ACTOR_DETACHED) ? 0 : r->slot + 1);
        W(p->owner_pid, nr_proc(r, r->slot)->pid);   /* the creator's slot, as it is now */
        p->cpus_held = cpus_milli;           /* held for the actor's life, as in Ray */
        /* From its placement group's bundle, if it has one: the one it
         * names, or the first with room (else the one that reserved enough
         * with the most free). */
        uint32_t bundle = (uint32_t)pool;
        if (bundle & NR_POOL_ANY) {
            uint32_t fit = nri_pool_pick(h, bundle, (uint32_t)(pool >> 32), cpus_milli, res_mask,
                                         res);
            bundle = fit ? fit : nri_pool_fallback(h, bundle, (uint32_t)(pool >> 32), cpus_milli,
                                                   res);
        }
        nri_acct_t a = nri_acct(r, bundle, (uint32_t)(pool >> 32));
        W(*a.cpus, *a.cpus - cpus_milli);
        if (a.pg) {
            p->pool = bundle;
            p->pool_gen = (uint32_t)(pool >> 32);
        }
        if (res_mask) nri_res_take_actor(r, p, a, res_mask, res);
        p->spawn_req = !infeasible;
        W(o->actor, i + 1);
        WINC(h->nactors);
        slot = (int)i;
        *gen_out = p->gen;
        if (free_name) {
            nr_undo_bytes(r, free_name, sizeof *free_name);
            free_name->handle_obj = handle_obj;
            LADD64(o->refs, 1);
            free_name->slot1 = i + 1;
            free_name->gen = p->gen;
            strncpy(free_name->key, key, NR_NAME_MAX - 1);
        }
        w.spawn = !infeasible;
        break;
    }
    nr_unlock(r);
    nri_flush(r, &w);
    return slot;
}

int nr_actor_lookup(nr_region_t *r, const char *key, uint64_t *handle_obj, uint32_t *slot,
                    uint32_t *gen) {
    int rc = -1;
    nr_lock(r);
    nr_name_t *n = names(r);
    for (uint32_t i = 0; i < r->hdr->max_names; i++) {
        if (n[i].handle_obj && strncmp(n[i].key, key, NR_NAME_MAX) == 0) {
            *handle_obj = n[i].handle_obj;
            *slot = n[i].slot1 - 1;
            *gen = n[i].gen;
            rc = 0;
            break;
        }
    }
    nr_unlock(r);
    return rc;
}

/* Dead for good: fail what is queued, forget the name, give back its CPUs. */
static void die_locked(nr_region_t *r, nr_proc_t *p, uint32_t slot, uint64_t death, wakeups_t *w) {
    W(p->aflags, p->aflags | NR_ACTOR_DEAD | NR_ACTOR_NO_RESTART);
    if (!p->death_obj && death) {
        nri_incref(r, death);
        nri_pin(r, death, 1);
        W(p->death_obj, death);
    }
    names_remove(r, slot);
    if (p->aflags & NR_ACTOR_DETACHED) {       /* nothing keeps it now but handles */
        W(p->aflags, p->aflags & ~NR_ACTOR_DETACHED);
        nri_decref(r, p->handle_obj);
    }
    int freed = p->cpus_held || p->res_mask;
    nri_release_held(r, p);
    if (freed) nri_kick(r, w);                 /* queued tasks may fit now */
    uint32_t t = p->create_ready;
    W(p->create_ready, 0);
    if (t && t != p->create_task) nri_fail_push(r, t, p->death_obj);
    if (p->create_task && nr_task(r, p->create_task)->state != NR_TASK_RUNNING)
        drop_create_task(r, p);
    /* Queued calls fail at the end of the section, one step each. */
    while ((t = p->q_head)) {
        W(p->q_head, nr_task(r, t)->next);
        WDEC(p->q_len);
        nri_fail_push(r, t, p->death_obj);
    }
    W(p->q_tail, 0);
    while ((t = p->h_head)) {
        nr_task_t *task = nr_task(r, t);
        W(p->h_head, task->next);
        WDEC(p->q_len);
        W(task->in_queue, 0);
        /* One still waiting for its arguments is failed when they are ready
         * (routed to this dead actor): its dependency links must stay. */
        if (task->state == NR_TASK_READY) nri_fail_push(r, t, p->death_obj);
    }
    W(p->h_tail, 0);
    held_clear(r, slot);
}

int nr_actor_die(nr_region_t *r, uint32_t slot, uint32_t gen, uint64_t death_obj) {
    wakeups_t w = {0};
    nr_lock(r);
    int rc = -1;
    if (slot_is(r, slot, gen)) {
        die_locked(r, nr_proc(r, slot), slot, death_obj, &w);
        rc = 0;
    }
    nr_unlock(r);
    nri_flush(r, &w);
    return rc;
}

/* The process in `slot` (pid) ended: the actors it created end with it,
 * for good, unless detached (as in Ray: an actor's owner is the process
 * that created it).  Under the lock, so none of them is inside a section
 * when it is killed; each one's own reap then fails its calls, and ends
 * the actors it created in turn. */
void nri_actor_owner_gone(nr_region_t *r, uint32_t slot, int32_t pid, wakeups_t *w) {
    if (pid <= 0 || !r->hdr->nactors) return;
    for (uint32_t i = 1; i < r->hdr->max_procs && i <= r->hdr->proc_hwm; i++) {
        nr_proc_t *c = nr_proc(r, i);
        if (c->kind != NR_KIND_ACTOR || c->state == NR_PROC_FREE || c->owner_slot1 != slot + 1 ||
            c->owner_pid != pid || (c->aflags & (NR_ACTOR_DEAD | NR_ACTOR_DETACHED)))
            continue;
        W(c->owner_slot1, 0);
        if (end_unstarted(r, c)) w->spawn = 1;   /* infeasible: a process starts, to exit */
        W(c->aflags, c->aflags | NR_ACTOR_KILLED | NR_ACTOR_NO_RESTART | NR_ACTOR_OWNER_DIED);
        if (c->state != NR_PROC_STARTING && c->pid > 0) kill(c->pid, SIGKILL);
    }
}

int32_t nr_actor_kill(nr_region_t *r, uint32_t slot, uint32_t gen, int no_restart) {
    int32_t pid = -1;
    int self = 0;
    wakeups_t w = {0};
    nr_lock(r);
    nr_proc_t *p = slot_is(r, slot, gen) ? nr_proc(r, slot) : NULL;
    if (p && !(p->aflags & NR_ACTOR_DEAD) && !no_restart && unstarted(p) && p->restarts_left != 0) {
        /* Infeasible, never started, with restarts left: as in Ray, the kill
         * takes a restart, and it stays pending (its calls wait). */
        if (p->restarts_left > 0) WDEC(p->restarts_left);
        WINC(p->restarts);
        pid = 0;
    } else if (p && !(p->aflags & NR_ACTOR_DEAD)) {
        w.spawn = end_unstarted(r, p);       /* infeasible: it ends for good */
        W(p->aflags, p->aflags | NR_ACTOR_KILLED | (no_restart ? NR_ACTOR_NO_RESTART : 0));
        pid = p->state == NR_PROC_STARTING ? 0 : p->pid;
        self = pid == (int32_t)getpid();
        if (pid > 0 && !self) kill(pid, SIGKILL);   /* it cannot be inside a critical section */
    }
    nr_unlock(r);
    nri_flush(r, &w);
    if (self) kill(pid, SIGKILL);                   /* an actor killing itself: not holding it */
    return pid;
}

int nr_actor_reap(nr_region_t *r, uint32_t slot, uint64_t death_obj, uint64_t unavail_obj) {
    nr_header_t *h = r->hdr;
    wakeups_t w = {0};
    nr_lock(r);
    nr_proc_t *p = nr_proc(r, slot);
    nri_release_drain(r, slot);              /* the frees it put off (commits each) */
    nri_ledger_release(r, slot, &w);         /* the handles and refs it held (first: it commits) */
    nri_actor_owner_gone(r, slot, p->pid, &w);
    nri_born_reap(r, slot);                  /* its arrays' blocks (commits too) */
    nr_arena_release_writing(r, slot);
    nri_spill_release(r, slot);
    int restart = !(p->aflags & (NR_ACTOR_DEAD | NR_ACTOR_NO_RESTART | NR_ACTOR_INFEASIBLE)) &&
                  p->restarts_left != 0 &&
                  !((p->aflags & NR_ACTOR_ORPHANED) && !p->q_head && !p->h_head &&
                    !p->create_ready) &&
                  !h->shutdown;
    /* The calls it was running: retried on the new process, or failed. */
    uint32_t requeue_head = 0, requeue_tail = 0;
    for (uint32_t t = 1; t <= h->task_hwm; t++) {
        nr_task_t *task = nr_task(r, t);
        if (task->state != NR_TASK_RUNNING || task->proc != slot + 1) continue;
        W(task->proc, 0);
        if (task->kind == NR_SPEC_ACTOR_CREATE) {
            W(task->state, NR_TASK_WAITING);     /* queued again below, or released */
            continue;
        }
        if (restart && task->retries_left != 0) {
            if (task->retries_left > 0) WDEC(task->retries_left);
            W(task->state, NR_TASK_READY);
            W(task->next, 0);
            if (requeue_tail) W(nr_task(r, requeue_tail)->next, t); else requeue_head = t;
            requeue_tail = t;
        } else {                             /* cancelled: that, as in Ray */
            uint64_t why = p->death_obj ? p->death_obj :
                           restart && unavail_obj ? unavail_obj : death_obj;
            nri_fail_push(r, t, task->cancelled && r->hdr->cancel_err ? r->hdr->cancel_err : why);
        }
    }
    W(p->nrunning, 0);
    W(p->pid, 0);
    W(p->sleeping, 0);
    int rc = 0;
    if (restart) {
        if (p->restarts_left > 0) WDEC(p->restarts_left);
        WINC(p->restarts);
        W(p->aflags, p->aflags & ~(NR_ACTOR_CREATED | NR_ACTOR_KILLED));
        if (requeue_head) {                      /* retried calls go first, in order */
            for (uint32_t t = requeue_head; t; t = nr_task(r, t)->next) WINC(p->q_len);
            W(nr_task(r, requeue_tail)->next, p->q_head);
            W(p->q_head, requeue_head);
            if (!p->q_tail) W(p->q_tail, requeue_tail);
        }
        nr_task_t *c = p->create_task ? nr_task(r, p->create_task) : NULL;
        if (c && !c->deps_left) {              /* else queued once its arguments are ready */
            W(c->state, NR_TASK_READY);
            W(p->create_ready, p->create_task);
        }
        nri_set_state(r, p, NR_PROC_STARTING);
        W(p->spawn_req, 1);
        rc = 1;
    } else if ((p->aflags & NR_ACTOR_ORPHANED) && !(p->aflags & NR_ACTOR_DEAD) && !p->q_head &&
               !p->h_head &&
               !p->create_ready) {
        int freed = p->cpus_held || p->res_mask;
        nri_release_held(r, p);
        if (freed) nri_kick(r, &w);
        free_slot(r, slot);                      /* its last handle went, and it exited */
    } else {
        die_locked(r, p, slot, death_obj, &w);
        if (p->aflags & NR_ACTOR_ORPHANED) free_slot(r, slot);
        else nri_set_state(r, p, NR_PROC_EXITED);   /* a tombstone until its handles go */
    }
    nr_unlock(r);
    nri_flush(r, &w);
    return rc;
}

int nr_actor_info(nr_region_t *r, uint32_t slot, uint32_t gen, uint32_t *flags,
                  uint32_t *restarts, int32_t *pid) {
    int rc = -1;
    nr_lock(r);
    if (slot_is(r, slot, gen)) {
        nr_proc_t *p = nr_proc(r, slot);
        *flags = p->aflags;
        *restarts = p->restarts;
        *pid = p->pid;
        rc = (int)p->state;
    }
    nr_unlock(r);
    return rc;
}
