/* nr_objects: the object table (ids, counts, sealing, freeing) and waiting
 * for objects (get, wait).  Tasks, queues and processes: nr_sched.c. */
#define _GNU_SOURCE
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "nr_internal.h"


nr_object_t *nr_object_lookup(nr_region_t *r, uint64_t id) {
    uint32_t idx = nr_id_index1(id);
    uint64_t gen = nr_id_gen(id);
    if (idx == 0 || idx > r->hdr->max_objects) return NULL;
    nr_object_t *o = objs(r) + (idx - 1);
    if ((LOAD(&o->gen) & NR_ID_GEN_MASK) != gen || LOAD(&o->state) == NR_OBJ_FREE) return NULL;
    return o;
}

void nr_object_mark_seen(nr_region_t *r, uint64_t id, int pending_too) {
    nr_object_t *o = nr_object_lookup(r, id);
    if (!o) return;
    uint32_t st = LOAD(&o->state);
    if ((st == NR_OBJ_ERROR || (pending_too && st == NR_OBJ_PENDING)) &&
        !(LOAD(&o->waiters) & NR_WAIT_SEEN))
        __atomic_fetch_or(&o->waiters, NR_WAIT_SEEN, __ATOMIC_RELAXED);
}

uint64_t nri_obj_alloc(nr_region_t *r) {
    nr_header_t *h = r->hdr;
    uint32_t idx;
    if (h->obj_free) {
        idx = h->obj_free - 1;
        W(h->obj_free, objs(r)[idx].next_free);
    } else if (h->obj_hwm < h->max_objects) {
        idx = h->obj_hwm;
        objs(r)[idx].gen = 1;            /* past the high-water mark: nothing reads it */
        W(h->obj_hwm, idx + 1);
    } else {
        return 0;
    }
    nr_object_t *o = objs(r) + idx;      /* free: plain stores (see nr_undo.h) */
    o->refs = 1;
    o->data = o->size = 0;
    o->dep_head = 0;
    o->waiters = 0;
    o->actor = 0;
    o->creator = 0;
    o->pins = 0;
    o->spill = NR_SPILL_NONE;
    W(o->state, NR_OBJ_PENDING);
    WINC(h->nobjects);
    uint64_t id = nr_make_id(o->gen, idx + 1);
    nri_ledger_add_locked(r, id, 1);     /* the caller's first count: its ObjectRef */
    return id;
}

/* Frees o.  An object whose last count was held by o's payload becomes a
 * zombie, freed in a step of its own at the end of the section (nr_unlock),
 * so a long chain of refs nested in values neither overflows the stack nor
 * makes one step too large to undo. */
void nri_obj_free(nr_region_t *r, nr_object_t *o) {
    nr_header_t *h = r->hdr;
    if (o->spill == NR_SPILL_DONE) nri_spill_forget(r, o);   /* data: a file, not a block */
    if (o->data) {
        nr_payload_t *p = (nr_payload_t *)(r->base + o->data);
        uint64_t *c = nr_payload_contained(p);
        for (uint32_t i = 0; i < p->ncontained; i++) {
            nr_object_t *x = nr_object_lookup(r, c[i]);
            if (x && LADD64(x->refs, -1) == 0 && x->state != NR_OBJ_PENDING) {
                W(x->next_free, h->zombie_head);
                W(h->zombie_head, (uint32_t)(x - objs(r)) + 1);
            }
        }
        nri_born_payload(r, p, -1);       /* the born blocks its buffers live in */
        nr_arena_free_keep_locked(r, o->data);
        W(o->data, 0);
    }
    if (o->actor) {                      /* the last handle of an actor is gone */
        uint32_t a = o->actor;
        W(o->actor, 0);
        nri_actor_orphaned(r, a);
    }
    W(o->state, NR_OBJ_FREE);
    W(o->gen, o->gen + 1);
    W(o->next_free, h->obj_free);
    W(h->obj_free, (uint32_t)(o - objs(r)) + 1);
    WDEC(h->nobjects);
}

/* Frees the zombies and fails the calls on the fail list, one committed
 * step each (the section before is complete). */
void nri_drain(nr_region_t *r, wakeups_t *w) {
    nr_header_t *h = r->hdr;
    for (;;) {
        nr_undo_commit(r);
        if (h->zombie_head) {
            nr_object_t *o = objs(r) + (h->zombie_head - 1);
            W(h->zombie_head, o->next_free);
            nri_obj_free(r, o);
        } else if (h->fail_head) {
            nri_fail_one(r, w);
        } else {
            return;
        }
    }
}

void nri_decref(nr_region_t *r, uint64_t id) {
    nr_object_t *o = nr_object_lookup(r, id);
    if (!o) return;
    if (LADD64(o->refs, -1) == 0 && o->state != NR_OBJ_PENDING) nri_obj_free(r, o);
}

/* A process that dies after its decref took an object's count to zero but
 * before it took the lock to free it leaves a sealed object nothing counts.
 * Called after reaping a process: looks for such objects without the lock,
 * then frees each under it, if still uncounted and not a zombie (a live
 * process in the same window finds the generation moved on, and frees
 * nothing).  Returns how many it freed. */
uint32_t nr_sweep_uncounted(nr_region_t *r) {
    nr_header_t *h = r->hdr;
    uint32_t n = LOAD(&h->obj_hwm), freed = 0;
    for (uint32_t i = 0; i < n; i++) {
        nr_object_t *o = objs(r) + i;
        uint32_t st = LOAD(&o->state);
        if (LOAD(&o->refs) != 0 || st == NR_OBJ_FREE || st == NR_OBJ_PENDING) continue;
        nr_lock(r);
        int zombie = 0;
        for (uint32_t z = h->zombie_head; z && !zombie; z = objs(r)[z - 1].next_free)
            zombie = z == i + 1;
        if (!zombie && LOAD(&o->refs) == 0 && o->state != NR_OBJ_FREE &&
            o->state != NR_OBJ_PENDING) {
            nri_obj_free(r, o);
            freed++;
        }
        nr_unlock(r);
    }
    return freed;
}

int nr_object_try_incref(nr_region_t *r, uint64_t id, int ready_only) {
    /* Under the lock, so a count that has reached zero is never revived:
     * the decref that reached it frees the object under this same lock. */
    nr_lock(r);
    nr_object_t *o = nr_object_lookup(r, id);
    int ok = o && (o->state == NR_OBJ_READY || !ready_only) && LOAD(&o->refs) > 0;
    if (ok) {
        LADD64(o->refs, 1);
        nri_ledger_add_locked(r, id, 1);
    }
    nr_unlock(r);
    return ok;
}

void nr_object_incref(nr_region_t *r, uint64_t id) {
    nr_object_t *o = nr_object_lookup(r, id);
    if (!o) return;
    /* Between the count and its ledger entry a death leaks the count.  The
     * first touch of a ledger page by this process faults, and a fault is
     * where a signal is most likely to stop it: fault before the count. */
    if (r->ledger) (void)*(volatile int32_t *)&r->ledger[nr_id_index1(id) - 1];
    ADD(&o->refs, 1);
    nri_ledger_add(r, id, 1);
}

/* Under the lock: frees object id (at o) if nothing counts it any more,
 * unless it is still pending (then its seal frees it). */
static void free_if_uncounted(nr_region_t *r, nr_object_t *o, uint64_t id) {
    if ((LOAD(&o->gen) & NR_ID_GEN_MASK) == nr_id_gen(id) && LOAD(&o->refs) == 0 &&
        o->state != NR_OBJ_PENDING && o->state != NR_OBJ_FREE)
        nri_obj_free(r, o);
}

void nr_object_decref(nr_region_t *r, uint64_t id) {
    nr_object_t *o = nr_object_lookup(r, id);
    if (!o) return;
    nri_ledger_add(r, id, -1);
    if (ADD(&o->refs, -1) != 0) return;
    /* Nobody can take a new reference now; free it unless still pending
     * (then the seal frees it).  Re-check under the lock. */
    nr_lock(r);
    free_if_uncounted(r, o, id);
    nr_unlock(r);
}

/* Whether freeing o can wait for this process's next section: a small
 * sealed value that holds nothing else (no refs inside, no arrays born in
 * blocks of their own, not an actor's handle count, not spilled), so that
 * putting it off keeps back at most NR_REL_RING small blocks and entries.
 * Read without the lock while the caller held o's last count: the seal's
 * stores are visible (state is read first), and the payload does not
 * change once sealed.  A wrong guess only frees sooner or later. */
static int free_can_wait(nr_region_t *r, nr_object_t *o) {
    if (LOAD(&o->state) != NR_OBJ_READY || o->actor || o->spill != NR_SPILL_NONE) return 0;
    uint64_t data = o->data;
    if (!data || o->size > NR_SMALL_PAYLOAD || data + sizeof(nr_payload_t) > r->size) return 0;
    nr_payload_t *p = (nr_payload_t *)(r->base + data);
    return p->ncontained == 0 && !(p->nbufs & NR_PAYLOAD_EXTERN);
}

int nr_object_release(nr_region_t *r, uint64_t id, int unseen_back) {
    nr_object_t *o = nr_object_lookup(r, id);
    if (!o) return 0;
    nri_ledger_add(r, id, -1);
    if (ADD(&o->refs, -1) != 0) return 0;
    if (!r->borrowed && free_can_wait(r, o)) {
        nr_proc_t *p = nr_proc(r, r->slot);
        uint32_t head = p->rel_head;
        if (head - __atomic_load_n(&p->rel_tail, __ATOMIC_ACQUIRE) < NR_REL_RING) {
            p->rel_ids[head % NR_REL_RING] = id;
            __atomic_store_n(&p->rel_head, head + 1, __ATOMIC_RELEASE);
            return 0;
        }
    }
    nr_lock(r);                          /* frees the ring too */
    int back = unseen_back && (LOAD(&o->gen) & NR_ID_GEN_MASK) == nr_id_gen(id) &&
               LOAD(&o->refs) == 0 && o->state == NR_OBJ_ERROR &&
               !(LOAD(&o->waiters) & NR_WAIT_SEEN);
    if (back) {                          /* the caller's again, to report */
        LADD64(o->refs, 1);
        nri_ledger_add_locked(r, id, 1);
        __atomic_fetch_or(&o->waiters, NR_WAIT_SEEN, __ATOMIC_RELAXED);
    } else {
        free_if_uncounted(r, o, id);
    }
    nr_unlock(r);
    return back;
}

static inline int ring_empty(nr_proc_t *p) {
    return p->rel_tail == __atomic_load_n(&p->rel_head, __ATOMIC_ACQUIRE);
}

void nri_release_drain(nr_region_t *r, uint32_t slot) {
    nr_proc_t *p = nr_proc(r, slot);
    uint32_t t = p->rel_tail, head = __atomic_load_n(&p->rel_head, __ATOMIC_ACQUIRE);
    if (head - t > NR_REL_RING) t = head;        /* never: a torn ring frees nothing */
    for (; t != head; t++) {
        uint64_t id = p->rel_ids[t % NR_REL_RING];
        nr_object_t *o = nr_object_lookup(r, id);
        if (o) free_if_uncounted(r, o, id);
        NR_CRASH_AT_END();
        nr_undo_commit(r);
        __atomic_store_n(&p->rel_tail, t + 1, __ATOMIC_RELEASE);
    }
}

void nr_release_flush(nr_region_t *r) {
    if (ring_empty(nr_proc(r, r->slot))) return;
    nr_lock(r);
    nr_unlock(r);
}

int nr_release_flush_all(nr_region_t *r) {
    uint32_t n = r->hdr->max_procs, i;
    for (i = 0; i < n && ring_empty(nr_proc(r, i)); i++) {}
    if (i == n) return 0;
    nr_lock(r);
    for (i = 0; i < n; i++)
        if (!ring_empty(nr_proc(r, i))) nri_release_drain(r, i);
    nr_unlock(r);
    return 1;
}

uint32_t nr_release_pending(nr_region_t *r, uint32_t slot) {
    nr_proc_t *p = nr_proc(r, slot);
    return __atomic_load_n(&p->rel_head, __ATOMIC_ACQUIRE) - p->rel_tail;
}

int nr_object_info(nr_region_t *r, uint64_t id, uint64_t *data, uint64_t *size) {
    nr_object_t *o = nr_object_lookup(r, id);
    if (!o) return -1;
    int s = (int)LOAD(&o->state);
    if (data) *data = o->data;
    if (size) *size = o->size;
    return s;
}

uint64_t nr_object_create(nr_region_t *r) {
    nr_lock(r);
    uint64_t id = nri_obj_alloc(r);
    if (id) W(objs(r)[nr_id_index1(id) - 1].creator, r->slot + 1);   /* it will seal it */
    nr_unlock(r);
    return id;
}


static void incref_payload_contained(nr_region_t *r, uint64_t data) {
    nr_payload_t *p = (nr_payload_t *)(r->base + data);
    uint64_t *c = nr_payload_contained(p);
    for (uint32_t i = 0; i < p->ncontained; i++) nri_incref(r, c[i]);
}


void nri_seal(nr_region_t *r, nr_object_t *o, uint64_t data, uint64_t size,
                        int is_error, wakeups_t *w) {
    W(o->data, data);
    W(o->size, size);
    if (data) {
        incref_payload_contained(r, data);
        nri_born_payload(r, (nr_payload_t *)(r->base + data), 1);
    }
    /* errors moves before an ERROR state is seen (a reader that finds
     * errors at 0 finds no failed object) and again after (a reader that
     * saw it move looks at the states again: rt/waiting.pyx). */
    if (is_error) ADD(&r->hdr->errors, 1);
    W(o->state, is_error ? NR_OBJ_ERROR : NR_OBJ_READY);
    /* Release the tasks that were waiting for this object, in the order
     * they were submitted (the list was built by pushing at the head). */
    uint32_t d = o->dep_head, rev = 0;
    W(o->dep_head, 0);
    while (d) {
        uint32_t next = deps(r)[d - 1].next;
        W(deps(r)[d - 1].next, rev);
        rev = d;
        d = next;
    }
    d = rev;
    while (d) {
        nr_dep_t *node = deps(r) + (d - 1);
        uint32_t next = node->next;
        nr_task_t *t = nr_task(r, node->dep_task);
        WDEC(t->deps_left);
        if (t->deps_left == 0) nri_enqueue(r, node->dep_task, w);
        W(node->next, r->hdr->dep_free);
        W(r->hdr->dep_free, d);
        WDEC(r->hdr->ndeps_live);
        d = next;
    }
    /* The state store above, then the waiter counts: a waiter counts itself,
     * then reads the state (nr_object_wait), so one of the two sees the other. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint32_t waiting = LOAD(&o->waiters);
    if (waiting & NR_WAIT_COUNT) {           /* get() on this object: wake only them */
        if (w->nobj < 8) w->obj_words[w->nobj++] = &o->state;
        else nr_futex_wake(&o->state, INT_MAX);   /* rare: more than 8 in one section */
    }
    uint32_t groups = waiting / NR_WAIT_GROUP0;  /* wait() on it: only those groups */
    for (uint32_t g = 0, m = groups; m; g++, m >>= 1)
        if (m & 1) ADD(&r->hdr->wait_seq[g], 1);
    w->groups |= groups;
    if (is_error) ADD(&r->hdr->errors, 1);
}

void nr_wake_object_waiters(nr_region_t *r) {
    uint32_t hwm = LOAD(&r->hdr->obj_hwm);
    for (uint32_t i = 0; i < hwm; i++)
        if (LOAD(&objs(r)[i].waiters) & NR_WAIT_COUNT) nr_futex_wake(&objs(r)[i].state, INT_MAX);
}

uint64_t nr_put(nr_region_t *r, uint64_t data, uint64_t size) {
    wakeups_t w = {0};
    nr_lock(r);
    uint64_t id = nri_obj_alloc(r);
    if (id) {
        nr_arena_written_as(r, data, size);
        nri_seal(r, objs(r) + (nr_id_index1(id) - 1), data, size, 0, &w);
    }
    nr_unlock(r);
    nri_flush(r, &w);
    return id;
}

int nri_object_seal(nr_region_t *r, uint64_t id, uint64_t data, uint64_t size, int is_error,
                    wakeups_t *w) {
    nr_object_t *o = nr_object_lookup(r, id);
    if (!o) return -1;
    if (o->state != NR_OBJ_PENDING) return 1;      /* a retried task sealed it before */
    nr_arena_written_as(r, data, size);
    nri_seal(r, o, data, size, is_error, w);
    if (LOAD(&o->refs) != 0) return 0;
    int unseen = is_error && !(LOAD(&o->waiters) & NR_WAIT_SEEN);
    nri_obj_free(r, o);
    return unseen ? 2 : 0;
}

int nr_object_seal(nr_region_t *r, uint64_t id, uint64_t data, uint64_t size, int is_error) {
    wakeups_t w = {0};
    nr_lock(r);
    int rc = nri_object_seal(r, id, data, size, is_error, &w);
    nr_unlock(r);
    nri_flush(r, &w);
    return rc;
}

int nr_stream_seal(nr_region_t *r, uint32_t t, uint64_t cell, uint64_t data, uint64_t size,
                   uint64_t next) {
    wakeups_t w = {0};
    nr_lock(r);
    nr_spec_t *s = spec_of(r, nr_task(r, t));
    nr_object_t *o = nr_object_lookup(r, cell);
    int rc = 0;
    if (!o) rc = -1;
    else if (o->state != NR_OBJ_PENDING) rc = 1;
    else {
        nr_arena_written_as(r, data, size);
        nri_seal(r, o, data, size, 0, &w);
        if (LOAD(&o->refs) == 0) nri_obj_free(r, o);
    }
    W(s->stream_cell, next);
    W(s->streamed, s->streamed + 1);
    nr_unlock(r);
    nri_flush(r, &w);
    return rc;
}

static inline int sealed(nr_object_t *o) { return LOAD(&o->state) != NR_OBJ_PENDING; }



int nr_object_wait(nr_region_t *r, uint64_t id, int64_t timeout_ns, int64_t spin_ns) {
    nr_object_t *o = nr_object_lookup(r, id);
    if (!o) return -1;
    if (sealed(o)) return 0;
    if (timeout_ns >= 0 && spin_ns > timeout_ns) spin_ns = timeout_ns;
    int64_t start = nr_now_ns();
    if (SPIN_UNTIL(r, sealed(o) || LOAD(&r->hdr->shutdown), spin_ns))
        return sealed(o) ? 0 : -1;
    nr_release_flush(r);                 /* nothing put off while it sleeps */
    int rc = 0;
    /* Sleep on the object's own state word: its seal wakes this object's
     * waiters only.  Counted first, then the state read (see nri_seal).
     * Shutdown leaves the state as it is, so a shutdown landing between the
     * check below and the futex call is seen only at the timeout: callers
     * wait in slices (rt/waiting.pyx, 100 ms) and look again. */
    ADD(&o->waiters, NR_WAIT_ONE);
    for (;;) {
        if (sealed(o)) break;
        if (LOAD(&r->hdr->shutdown)) { rc = -1; break; }
        int64_t left = -1;
        if (timeout_ns >= 0) {
            left = timeout_ns - (nr_now_ns() - start);
            if (left <= 0) { rc = 1; break; }
        }
        nr_futex_wait(&o->state, NR_OBJ_PENDING, left);
    }
    ADD(&o->waiters, -(int32_t)NR_WAIT_ONE);
    return rc;
}

static int count_ready(nr_region_t *r, const uint64_t *ids, int n, uint8_t *ready) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        nr_object_t *o = nr_object_lookup(r, ids[i]);
        ready[i] = (uint8_t)(!o || sealed(o));   /* a stale id counts as ready: get reports it */
        k += ready[i];
    }
    return k;
}

int nr_wait_many(nr_region_t *r, const uint64_t *ids, int n, int want,
                 int64_t timeout_ns, int64_t spin_ns, uint8_t *ready) {
    return nr_wait_many_or(r, ids, n, want, timeout_ns, spin_ns, ready, NULL);
}

void nr_poke_waiters(nr_region_t *r) {
    nri_wake_all_groups(r->hdr);
}

/* This thread's group of waiters (nr_region.h): its tid spreads the
 * threads of all processes over the words. */
static uint32_t my_group(void) {
    static __thread uint32_t g1;         /* group + 1; 0: not chosen yet */
    if (!g1) g1 = (uint32_t)syscall(SYS_gettid) % NR_WAIT_GROUPS + 1;
    return g1 - 1;
}

int nr_wait_many_or(nr_region_t *r, const uint64_t *ids, int n, int want,
                    int64_t timeout_ns, int64_t spin_ns, uint8_t *ready, uint32_t *cancel) {
    int k = count_ready(r, ids, n, ready);
    if (k >= want || timeout_ns == 0) return k;
    if (timeout_ns >= 0 && spin_ns > timeout_ns) spin_ns = timeout_ns;
    int64_t start = nr_now_ns();
    if (SPIN_UNTIL(r, (k = count_ready(r, ids, n, ready)) >= want || LOAD(&r->hdr->shutdown),
                   spin_ns))
        return k;
    nr_release_flush(r);
    /* Mark this thread's group on the ids pending now, and only on those:
     * their seals wake this group's word, no other.  The mark stays until
     * the object is freed (another thread of the group may watch it too). */
    uint32_t g = my_group(), bit = NR_WAIT_GROUP0 << g;
    uint32_t *word = &r->hdr->wait_seq[g];
    int first = 0;                       /* every id before it is ready */
    for (int i = 0; i < n; i++) {
        nr_object_t *o = ready[i] ? NULL : nr_object_lookup(r, ids[i]);
        if (o && !(LOAD(&o->waiters) & bit)) __atomic_fetch_or(&o->waiters, bit, __ATOMIC_SEQ_CST);
    }
    for (;;) {
        uint32_t seq = LOAD(word);
        /* Look again at the ids not ready yet; waiting for all of them,
         * stop at the first still pending (seals do not come undone). */
        if (want == n) {
            while (first < n) {
                if (!ready[first]) {
                    nr_object_t *o = nr_object_lookup(r, ids[first]);
                    if (o && !sealed(o)) break;
                    ready[first] = 1;
                }
                first++;
            }
            k = first;
        } else {
            k = 0;
            for (int i = 0; i < n; i++) {
                if (!ready[i]) {
                    nr_object_t *o = nr_object_lookup(r, ids[i]);
                    ready[i] = (uint8_t)(!o || sealed(o));
                }
                k += ready[i];
            }
        }
        if (k >= want || LOAD(&r->hdr->shutdown) || (cancel && LOAD(cancel))) break;
        int64_t left = -1;
        if (timeout_ns >= 0) {
            left = timeout_ns - (nr_now_ns() - start);
            if (left <= 0) break;
        }
        nr_futex_wait(word, seq, left);
    }
    if (want == n && k < n) k = count_ready(r, ids, n, ready);   /* all of ready[], exact */
    return k;
}
