/* nr_cancel: cancelling tasks and the retries an exception may use: finding
 * a return's task, marking it, signalling the process running it, dropping it
 * from the resource queue, listing what a task submitted.  Tasks, queues and
 * processes: nr_sched.c. */
#include <signal.h>
#include <unistd.h>

#include "nr_internal.h"

int nr_task_use_retry(nr_region_t *r, uint32_t t) {
    nr_lock(r);
    nr_task_t *task = nr_task(r, t);
    int ok = task->retries_left != 0 && !task->cancelled;
    if (ok && task->retries_left > 0) WDEC(task->retries_left);
    nr_unlock(r);
    return ok;
}

/* Task (t, gen) is alive: its slot holds that generation and is in use. */
static nr_task_t *live_task(nr_region_t *r, uint32_t t, uint32_t gen) {
    if (t == 0 || t > r->hdr->task_hwm) return NULL;
    nr_task_t *task = nr_task(r, t);
    return task->gen == gen && task->state != NR_TASK_FREE && task->spec ? task : NULL;
}

uint32_t nr_task_of(nr_region_t *r, uint64_t ret_id, uint32_t *gen) {
    uint32_t found = 0;
    nr_lock(r);
    nr_object_t *o = nr_object_lookup(r, ret_id);
    /* `task` is only a hint (a stale free-list link for other objects): the
     * task must be live and list ret_id among its returns. */
    if (o && o->task && o->task <= r->hdr->task_hwm) {
        nr_task_t *task = nr_task(r, o->task);
        if (task->state != NR_TASK_FREE && task->spec) {
            nr_spec_t *s = spec_of(r, task);
            for (uint32_t i = 0; i < s->nret && !found; i++)
                if (nr_spec_ids(s)[i] == ret_id) found = o->task;
            if (found) *gen = task->gen;
        }
    }
    nr_unlock(r);
    return found;
}

/* A running task that has sealed every return (a streaming generator: its
 * last cell too) and only has to finish: cancelling it is a no-op, as for
 * a finished one (its children are not cancelled either). */
static int returned(nr_region_t *r, nr_task_t *task) {
    nr_spec_t *s = spec_of(r, task);
    if (!s->nret) return 0;
    nr_object_t *o = s->stream_cell ? nr_object_lookup(r, s->stream_cell) : NULL;
    if (o && o->state == NR_OBJ_PENDING) return 0;
    for (uint32_t i = 0; i < s->nret; i++) {
        o = nr_object_lookup(r, nr_spec_ids(s)[i]);
        if (o && o->state == NR_OBJ_PENDING) return 0;
    }
    return 1;
}

int nr_task_cancel(nr_region_t *r, uint32_t t, uint32_t gen, int mark, int32_t *pid,
                   uint32_t *kind, uint64_t *rets, uint32_t *nret) {
    int state = -1;
    *pid = 0;
    nr_lock(r);
    nr_task_t *task = live_task(r, t, gen);
    if (task && task->state == NR_TASK_RUNNING && returned(r, task)) task = NULL;
    if (task) {
        state = (int)task->state;
        *kind = task->kind;
        nr_spec_t *s = spec_of(r, task);
        uint32_t n = s->nret;
        for (uint32_t i = 0; i < n && i < *nret; i++) rets[i] = nr_spec_ids(s)[i];
        if (s->stream_cell) {            /* a re-run generator's pending cell, last */
            if (n < *nret) rets[n] = s->stream_cell;
            n++;
        }
        *nret = n;
        if (mark == 1 || (mark == 2 && state != NR_TASK_RUNNING)) {
            W(task->cancelled, 1);
            W(task->retries_left, 0);
        }
        if (state == NR_TASK_RUNNING && task->proc) *pid = nr_proc(r, task->proc - 1)->pid;
    }
    nr_unlock(r);
    return state;
}

int nri_set_error(nr_region_t *r, uint64_t *field, uint64_t err) {
    nr_lock(r);
    if (*field) nri_decref(r, *field);
    if (err) nri_incref(r, err);
    W(*field, err);
    nr_unlock(r);
    return 0;
}

int nr_cancel_set_error(nr_region_t *r, uint64_t err) {
    return nri_set_error(r, &r->hdr->cancel_err, err);
}

int nr_task_drop(nr_region_t *r, uint32_t t, uint32_t gen) {
    nr_header_t *h = r->hdr;
    int dropped = 0;
    nr_lock(r);
    nr_task_t *task = live_task(r, t, gen);
    if (task && task->cancelled && task->state == NR_TASK_READY && !task->target) {
        uint32_t *head = task->nested ? &h->xnq_head : &h->xq_head;   /* its xq list */
        uint32_t *tail = task->nested ? &h->xnq_tail : &h->xq_tail;
        uint32_t prev = 0;
        for (uint32_t x = *head; x; prev = x, x = nr_task(r, x)->next) {
            if (x != t) continue;
            if (prev) W(nr_task(r, prev)->next, task->next); else W(*head, task->next);
            if (*tail == t) W(*tail, prev);
            WDEC(h->xq_len);
            nri_release(r, t);
            dropped = 1;
            break;
        }
    }
    nr_unlock(r);
    return dropped;
}

int nr_task_signal(nr_region_t *r, uint32_t t, uint32_t gen, int sig) {
    int sent = 0;
    nr_lock(r);
    nr_task_t *task = live_task(r, t, gen);
    if (task && task->state == NR_TASK_RUNNING && task->proc) {
        int32_t pid = nr_proc(r, task->proc - 1)->pid;
        if (pid > 0 && pid != (int32_t)getpid()) sent = kill(pid, sig) == 0;
    }
    nr_unlock(r);
    return sent;
}

uint32_t nri_list_tasks(nr_region_t *r, int (*match)(nr_region_t *, nr_task_t *, uint64_t),
                        uint64_t key, uint64_t *out, uint32_t max) {
    uint32_t n = 0;
    nr_lock(r);
    for (uint32_t t = 1; t <= r->hdr->task_hwm; t++) {
        nr_task_t *task = nr_task(r, t);
        if (task->state == NR_TASK_FREE || !task->spec || !match(r, task, key)) continue;
        if (n < max) out[n] = ((uint64_t)task->gen << 32) | t;
        n++;
    }
    nr_unlock(r);
    return n;
}

static int submitted_by(nr_region_t *r, nr_task_t *task, uint64_t parent) {
    return spec_of(r, task)->parent == parent;
}

uint32_t nr_task_children(nr_region_t *r, uint64_t parent, uint64_t *out, uint32_t max) {
    return nri_list_tasks(r, submitted_by, parent, out, max);
}
