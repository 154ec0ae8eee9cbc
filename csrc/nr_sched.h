/* nr_sched: objects, tasks, queues and waiting, on the shared region.
 * (Objects and waiting for them are implemented in nr_objects.c; a task's
 * submission in nr_submit.c; queues, taking and finishing tasks, and
 * processes in nr_sched.c; resources beyond CPUs in nr_res.c;
 * cancelling in nr_cancel.c; placement groups in nr_pg.c; actors in
 * nr_actor.c.)
 *
 * Every process runs this same code on the shared state: a submitter
 * registers a task and queues it (or parks it on the objects it waits
 * for); the process that seals an object releases the tasks waiting on it
 * and wakes the processes blocked in get(); a worker pops its next task
 * itself.  There is no scheduler process and no extra hop.
 *
 *   submit ──► deps ready? ──yes──► ready queue ──► worker pops (if CPUs)
 *                 │no                   ▲                 │ runs, seals returns
 *                 └─► dep node on object┘◄── seal ◄───────┘
 *
 * Ids: an object id is (generation << 24) | (index + 1), so a stale id is
 * detected rather than silently naming a reused entry.  Generations have
 * 40 bits: one entry reused a million times a second wraps after 12 days
 * (32 bits wrapped within the hour at measured put rates).  Tasks are named by
 * index + 1 (0 = none).
 *
 * Reference counts (atomics outside the lock; freeing under it) count
 * ObjectRefs in any process, tasks that take the object as an argument or
 * carry it nested in their arguments, payloads that contain a ref to it,
 * and live zero-copy views.  An object is freed when its count is zero and
 * it is no longer pending.
 */
#ifndef NR_SCHED_H
#define NR_SCHED_H

#include "nr_arena.h"

#define NR_ID_INDEX_BITS 24                       /* at most 2^24 - 1 objects */
#define NR_ID_GEN_MASK ((1ULL << 40) - 1)
static inline uint32_t nr_id_index1(uint64_t id) { return (uint32_t)(id & ((1u << NR_ID_INDEX_BITS) - 1)); }
static inline uint64_t nr_id_gen(uint64_t id) { return id >> NR_ID_INDEX_BITS; }
static inline uint64_t nr_make_id(uint64_t gen, uint32_t index1) {
    return ((gen & NR_ID_GEN_MASK) << NR_ID_INDEX_BITS) | index1;
}

enum { NR_OBJ_FREE = 0, NR_OBJ_PENDING, NR_OBJ_READY, NR_OBJ_ERROR };
enum { NR_SPILL_NONE = 0, NR_SPILL_WRITING, NR_SPILL_DONE };
enum { NR_TASK_FREE = 0, NR_TASK_WAITING, NR_TASK_READY, NR_TASK_RUNNING };
enum { NR_SPEC_TASK = 0, NR_SPEC_ACTOR_CREATE, NR_SPEC_ACTOR_CALL,
       NR_SPEC_CANCELLED };   /* a creation task whose actor ended while it waited */

enum { NR_WAIT_ONE = 1u, NR_WAIT_COUNT = 0x7FFFu, NR_WAIT_SEEN = 1u << 15,
       NR_WAIT_GROUP0 = 1u << 16 };

typedef struct {
    uint64_t gen;         /* generation, bumped on free; the id's high bits (mod 2^40) */
    uint32_t state;       /* NR_OBJ_* */
    uint32_t dep_head;    /* dep nodes of tasks waiting for it (index + 1) */
    int64_t refs;         /* atomic reference count */
    uint64_t data;        /* payload offset in the arena, 0 if none */
    uint64_t size;        /* payload bytes */
    uint32_t waiters;     /* atomic: threads waiting until it seals, in two counts:
                           * NR_WAIT_ONE each for those sleeping on `state` (get) in
                           * the low 15 bits; above, a bit per group of threads that
                           * wait() on it (NR_WAIT_GROUP0 << g: hdr->wait_seq[g]),
                           * set by its first such waiter, cleared when it is freed;
                           * and NR_WAIT_SEEN: its failure was raised by a get() or
                           * returned by a wait() in some process, so dropping its
                           * last ref reports nothing (nr_object_mark_seen) */
    union {
        uint32_t next_free;   /* free (or zombie) list link (index + 1) */
        uint32_t task;        /* a task's return: that task (index + 1), for cancel */
    };
    uint32_t actor;       /* slot + 1 of the actor whose handles it counts, 0 if none */
    uint32_t creator;     /* nr_object_create: slot + 1 of the process that will seal it */
    uint32_t pins;        /* atomic: readers of its payload in memory (views, loads) */
    uint32_t spill;       /* NR_SPILL_*: in memory, being written out, or in a file
                           * (then `data` holds the file's number, not an offset) */
} nr_object_t;
_Static_assert(sizeof(nr_object_t) == 64, "the region lays out 64 bytes per object");

typedef struct {
    uint32_t gen;         /* bumped on free */
    uint32_t state;       /* NR_TASK_* */
    uint32_t next;        /* queue or free-list link (index + 1) */
    uint32_t deps_left;   /* argument objects not yet sealed */
    uint64_t spec;        /* arena offset of its nr_spec_t */
    int32_t cpus;         /* milli-CPUs it needs */
    int32_t retries_left; /* re-runs allowed if its process dies */
    uint32_t proc;        /* slot + 1 of the process running it */
    uint32_t target;      /* slot + 1 it is routed to, 0 = any worker */
    uint32_t attempts;    /* times it was started */
    uint32_t kind;        /* NR_SPEC_* (from its spec) */
    uint32_t in_queue;    /* an actor call holding its place in the queue while its
                           * arguments are pending (calls run in submission order) */
    uint32_t nested;      /* submitted from inside a task or actor: the nested queue */
    uint32_t caller;      /* slot + 1 of the process that submitted it (actor call order) */
    uint32_t cancelled;   /* nanoray.cancel() asked for it: never (re)run, no retries */
    uint64_t fail_obj;    /* on the fail list: the error payload to fail it with (counted) */
    uint32_t res_mask;    /* resources beyond CPUs it needs (bit k: res[k] > 0) */
    uint32_t gpu_mask;    /* while running: the GPU devices it was given */
    int32_t res[NR_RES];  /* amounts (NR_RES_* units); res[0] unused */
    uint32_t pool;        /* placement group (index + 1) it runs in, 0 if none */
    uint32_t pool_gen;    /* and its generation */
    uint64_t env;         /* its runtime_env's key (a hash, < 2^63), 0 if none: it runs
                           * only in a worker keyed to it, or a fresh one (nr_proc_t.env) */
} nr_task_t;
_Static_assert(sizeof(nr_task_t) == 128, "the region lays out 128 bytes per task");

/* A task's description, written into the arena by the submitter. */
typedef struct {
    uint64_t func_id;     /* object holding the pickled function */
    uint64_t args_obj;    /* object holding large pickled args, 0 if inline */
    uint64_t args_len;    /* bytes of inline pickled args after the ids */
    uint32_t nret;        /* return objects (ids filled in by submit) */
    uint32_t ndeps;       /* top-level ref arguments */
    uint32_t ncontained;  /* refs nested in the args */
    uint32_t kind;        /* NR_SPEC_TASK, NR_SPEC_ACTOR_CREATE or NR_SPEC_ACTOR_CALL */
    uint64_t parent;      /* (gen << 32) | index + 1 of the task that submitted it, 0 if none */
    uint64_t stream_cell; /* a streaming generator task that has yielded: its pending
                           * cell (0: still ret[0]); a re-run resumes there */
    uint64_t streamed;    /* and the values it has yielded, which a re-run skips */
    /* uint64_t ret[nret], deps[ndeps], contained[ncontained]; args bytes */
} nr_spec_t;

/* An object payload, written into the arena by the serializer. */
typedef struct {
    uint32_t nbufs;       /* out-of-band buffers; bit 31 (NR_PAYLOAD_EXTERN): some live
                           * in blocks of their own (arrays born in the arena, nr_born.h) */
    uint32_t ncontained;  /* refs nested in the value */
    uint64_t pickle_len;  /* bytes of the pickle stream */
    /* uint64_t contained[ncontained]; {uint64_t off, len} bufs[nbufs];
     * with NR_PAYLOAD_EXTERN, uint64_t blocks[nbufs]: the born block that
     * buffer i lies in (its payload offset; then off is a region offset),
     * 0 when the buffer is in this payload;
     * pickle stream; buffers, each NR_ALIGN-aligned (off from payload start) */
} nr_payload_t;
#define NR_PAYLOAD_EXTERN 0x80000000u
static inline uint32_t nr_payload_nbufs(const nr_payload_t *p) { return p->nbufs & ~NR_PAYLOAD_EXTERN; }
/* The blocks[] table, NULL when every buffer is in the payload. */
static inline uint64_t *nr_payload_blocks(nr_payload_t *p) {
    if (!(p->nbufs & NR_PAYLOAD_EXTERN)) return NULL;
    return (uint64_t *)(p + 1) + p->ncontained + 2 * (uint64_t)nr_payload_nbufs(p);
}

static inline uint64_t *nr_spec_ids(nr_spec_t *s) { return (uint64_t *)(s + 1); }
static inline char *nr_spec_args(nr_spec_t *s) {
    return (char *)(nr_spec_ids(s) + s->nret + s->ndeps + s->ncontained);
}
static inline uint64_t *nr_payload_contained(nr_payload_t *p) { return (uint64_t *)(p + 1); }

typedef struct {
    uint64_t nobjects, ntasks, rq_len, nworkers, nsleeping, nstarting, nidle, nspinning;
    uint64_t nblocked, max_workers, xq_len, nbusy, ncpu;
    int64_t cpus_total, cpus_avail;
    uint64_t arena_used, arena_nallocs, arena_brk, arena_peak, arena_size;
    uint64_t repairs;
    uint64_t nactors, lock_stalls;
    uint64_t spilled_objects, spilled_bytes, spills, restores;
} nr_stats_t;

/* Objects */
nr_object_t *nr_object_lookup(nr_region_t *r, uint64_t id);   /* NULL if stale */
/* Marks id's failure as looked at (NR_WAIT_SEEN), when it has failed (or
 * is still pending, with pending_too), by a caller holding a count on it:
 * an atomic OR, no lock (a hint for the "Unhandled error" report, never
 * undone). */
void nr_object_mark_seen(nr_region_t *r, uint64_t id, int pending_too);
uint64_t nr_object_create(nr_region_t *r);                      /* pending, refs 1; 0 if full */
uint64_t nr_put(nr_region_t *r, uint64_t data, uint64_t size);  /* ready, refs 1; 0 if full */
/* 0 sealed; 1 already sealed (caller frees data); -1 stale id; 2 sealed
 * a failure (is_error) that no ref counted and nobody had seen: it was
 * freed at once, data with it, and the caller reports it ("Unhandled
 * error"), since no process is left to. */
int nr_object_seal(nr_region_t *r, uint64_t id, uint64_t data, uint64_t size, int is_error);
/* Streaming generator task t yielded: seals its pending cell `cell` (the
 * payload holds the value's ref and the next cell's) and records `next` as
 * its pending cell and one more value yielded, in one section, so a re-run
 * after its process died resumes at `next`.  Returns as nr_object_seal. */
int nr_stream_seal(nr_region_t *r, uint32_t t, uint64_t cell, uint64_t data, uint64_t size,
                   uint64_t next);
void nr_object_incref(nr_region_t *r, uint64_t id);
/* Takes a count only if the object is still counted, and ready (sealed,
 * not failed) with ready_only: 1, else 0. */
int nr_object_try_incref(nr_region_t *r, uint64_t id, int ready_only);
void nr_object_decref(nr_region_t *r, uint64_t id);
/* nr_object_decref for a ref that Python code drops (ObjectRef): when the
 * count reaches zero and the object is a small plain value, its free waits
 * for this process's next section (up to NR_REL_RING of them), so that a
 * driver dropping the results it got takes no section per ref.  One thread
 * of a process at a time may call it (the GIL's holder); a borrowed process
 * frees at once.  The ring is in the process's slot: a reap frees what a
 * dead process put off.  unseen_back: when the count it drops was the
 * last on a failure nobody has seen (NR_WAIT_SEEN), the count is handed
 * back instead (1; the failure is then marked seen): the caller reports
 * it, then drops it again; decided in the section that would free it, so
 * a seal racing the drop reports it in one process or the other. */
int nr_object_release(nr_region_t *r, uint64_t id, int unseen_back);
/* Frees now what nr_object_release put off: this process's (a section, if
 * any), or every process's (returns whether it took a section). */
void nr_release_flush(nr_region_t *r);
int nr_release_flush_all(nr_region_t *r);
uint32_t nr_release_pending(nr_region_t *r, uint32_t slot);   /* for tests */
/* Frees sealed objects nothing counts any more (left by a process that died
 * between its decref and the free); called after a reap.  Returns how many. */
uint32_t nr_sweep_uncounted(nr_region_t *r);
/* Spilling (see nr_spill.c).  Reading a payload: pin it first.  pin returns
 * the state (-1 stale) and, when the payload is in memory, its offset and
 * size with a pin taken (unpin when done); with *data == 0 and spill set
 * it took none: NR_SPILL_WRITING, wait; NR_SPILL_DONE, restore it from
 * file number *file. */
int nr_object_pin(nr_region_t *r, uint64_t id, uint64_t *data, uint64_t *size, uint32_t *spill,
                  uint64_t *file);
void nr_object_unpin(nr_region_t *r, uint64_t id);
/* Picks the sealed, unpinned object whose block would free the largest
 * span (preferring spans of at least `need` bytes), marks it being written
 * out by this process (one at a time per process slot), and returns its id
 * (0: none), payload, size, and the number of the new file to write. */
uint64_t nr_spill_pick(nr_region_t *r, uint64_t need, uint64_t *data, uint64_t *size,
                       uint64_t *file);
/* Its payload is in the file now: frees the block (1), or, if a reader
 * pinned it meanwhile, leaves it in memory (0: remove the file). */
int nr_spill_commit(nr_region_t *r, uint64_t id);
/* The same for a payload whose buffers live in born blocks (nr_born.h):
 * the file holds it made whole, `size` bytes (what a restore reads back),
 * and the object gives back its counts on those blocks. */
int nr_spill_commit_as(nr_region_t *r, uint64_t id, uint64_t size);
void nr_spill_abort(nr_region_t *r, uint64_t id);
/* File `file` was read into block `off`: the object takes the block (1) and
 * its file is removed, or the object is no longer in that file (0: free
 * the block, pin again). */
int nr_spill_restore(nr_region_t *r, uint64_t id, uint64_t file, uint64_t off);
/* The path of spill file number `file`; 0, or -1 if no spill directory. */
int nr_spill_path(nr_region_t *r, uint64_t file, char *out, size_t cap);
/* An object stored sealed with a pin that is never given back (never
 * spilled): for payloads the C layer reads itself (an actor's death error). */
uint64_t nr_put_pinned(nr_region_t *r, uint64_t data, uint64_t size);
int nr_spill_set_dir(nr_region_t *r, const char *dir);   /* the driver, at init */
/* State (NR_OBJ_*) and payload, -1 if the id is stale. */
int nr_object_info(nr_region_t *r, uint64_t id, uint64_t *data, uint64_t *size);
/* 0 ready, 1 timed out, -1 shut down or stale id.  timeout_ns < 0: forever,
 * but a shutdown may then go unseen: wait in slices (see nr_objects.c). */
int nr_object_wait(nr_region_t *r, uint64_t id, int64_t timeout_ns, int64_t spin_ns);
/* Waits until at least `want` of ids are sealed; fills ready[]; returns how many. */
int nr_wait_many(nr_region_t *r, const uint64_t *ids, int n, int want,
                 int64_t timeout_ns, int64_t spin_ns, uint8_t *ready);

/* As nr_wait_many, and returns early once *cancel is non-zero (set by
 * another thread of this process, followed by nr_poke_waiters). */
int nr_wait_many_or(nr_region_t *r, const uint64_t *ids, int n, int want,
                    int64_t timeout_ns, int64_t spin_ns, uint8_t *ready, uint32_t *cancel);
/* Wakes every process waiting for objects, to look again. */
void nr_poke_waiters(nr_region_t *r);

/* Tasks.  submit returns the task (index + 1), 0 when a table is full, and
 * writes the return object ids to ret_out[nret].  res: what it needs beyond
 * CPUs (NR_RES amounts, res[0] unused), NULL for nothing.  env: its
 * runtime_env's key (a hash below 2^63; 0 for none): it runs only in pool
 * workers that run that environment's tasks alone (nr_proc_t.env). */
uint32_t nr_task_submit(nr_region_t *r, uint64_t spec, int32_t cpus,
                        int32_t retries, uint32_t target_slot1, const int32_t *res,
                        uint64_t pool, uint64_t env, uint64_t *ret_out);
/* The same for a spec written elsewhere (size bytes at spec, the caller's
 * memory): its block is allocated, and the spec copied in, in the submit's
 * own section.  0 also when the arena has no room (nothing is spilled
 * here: allocate and call nr_task_submit then). */
uint32_t nr_task_submit_copy(nr_region_t *r, const void *spec, uint64_t size, int32_t cpus,
                             int32_t retries, uint32_t target_slot1, const int32_t *res,
                             uint64_t pool, uint64_t env, uint64_t *ret_out);
/* Placement groups (nr_pg.c).  Each bundle of a group has a slot; its pool
 * is (gen << 32) | (slot + 1), the group's is its first bundle's, and that
 * with NR_POOL_ANY (bit 31) names any bundle of the group (a task takes the
 * first that fits).  0 for none.  nr_pg_create reserves cpus[b] and
 * res[b * NR_RES ..] (NULL: none) for each bundle b from the node now, or
 * once they are all free (pending), writes each bundle's slot to slots[b],
 * and returns the group's pool: 0 when fewer than nb slots are free.  The
 * rest take any of the group's pools (nr_pg_tasks: the group's).
 * nr_pg_remove gives
 * what is unused back to the node (what its tasks hold goes back as they
 * finish): 0, or -1 if already gone.  nr_pg_state: NR_PG_*, -1 if gone.
 * nr_pg_tasks writes up to max (gen << 32 | t) of the tasks scheduled in it
 * that have not started, returns how many there are. */
#define NR_POOL_ANY 0x80000000u
uint64_t nr_pg_create(nr_region_t *r, uint32_t nb, const int32_t *cpus, const int32_t *res,
                      uint32_t *slots);
int nr_pg_remove(nr_region_t *r, uint64_t pool);
int nr_pg_state(nr_region_t *r, uint64_t pool);
uint32_t nr_pg_tasks(nr_region_t *r, uint64_t pool, uint64_t *out, uint32_t max);
/* At init: the error the tasks of a removed group fail with (an object, pinned). */
int nr_pg_set_gone_error(nr_region_t *r, uint64_t err);
/* 1 if the live group's bundle that pool names (or with NR_POOL_ANY, one
 * of its bundles) reserved at least cpus and res (an actor's demand). */
int nr_pg_fits(nr_region_t *r, uint64_t pool, int32_t cpus, const int32_t *res);
/* Resources: kind k (1..NR_RES-1) is named `name` with `total` units
 * (GPUs: whole devices * 1000); at init, before any task. */
int nr_resource_define(nr_region_t *r, uint32_t k, const char *name, int64_t total);
/* Totals and what is free now, NR_RES each (k = 0: CPUs, milli). */
void nr_resources(nr_region_t *r, int64_t *total, int64_t *avail);
nr_task_t *nr_task(nr_region_t *r, uint32_t t);
/* nr_task_finish then nr_task_next, the finish and the first take in one
 * section (a pool worker's loop: one lock acquisition fewer per task). */
int64_t nr_task_finish_next(nr_region_t *r, uint32_t slot, uint32_t t, int64_t spin_ns,
                            int64_t idle_timeout_ns);
/* Next task for process `slot`: > 0 a task, 0 shut down, -1 idle timeout. */
int64_t nr_task_next(nr_region_t *r, uint32_t slot, int64_t spin_ns, int64_t idle_timeout_ns);
/* Pops the next task for `slot` without waiting: > 0 a task, 0 none. */
int64_t nr_task_try_next(nr_region_t *r, uint32_t slot);
/* nr_task_finish of task done (if not 0), and in the same section the next
 * task for `slot` if one is there (> 0), without waiting, spinning or
 * sleeping: 0 when none (or shut down).  Short enough to call holding the
 * GIL. */
int64_t nr_task_finish_try_next(nr_region_t *r, uint32_t slot, uint32_t done);
/* The same, sealing first the object id (if not 0) with the payload at data
 * (size bytes, not an error), as nr_object_seal would: one section for a
 * task's one return, its end and the next task.  A refused seal (the object
 * is gone or sealed already) gives the block back. */
int64_t nr_task_seal_finish_try_next(nr_region_t *r, uint32_t slot, uint32_t done, uint64_t id,
                                     uint64_t data, uint64_t size);
/* The same, for a pool worker leaving after it (max_calls): it retires in
 * that section (-1), or, when tasks are routed to it alone, takes one. */
int64_t nr_task_seal_finish_retire(nr_region_t *r, uint32_t slot, uint32_t done, uint64_t id,
                                   uint64_t data, uint64_t size);
/* The running process is done with task t: CPUs back, arguments released. */
void nr_task_finish(nr_region_t *r, uint32_t slot, uint32_t t);
/* Task t lost its process: queue it again (1) or, with no retries left, 0. */
int nr_task_retry(nr_region_t *r, uint32_t t);
/* Releases a task that will not run again (after its returns were sealed). */
void nr_task_release(nr_region_t *r, uint32_t t);
/* The running task t raised an exception it may be retried for: takes one
 * of its retries (1), or 0 when none is left. */
int nr_task_use_retry(nr_region_t *r, uint32_t t);
/* Cancelling.  nr_task_of: the live task (index + 1, and its generation)
 * that ret_id is a return of; 0 if none (finished, or not a task's return).
 * nr_task_cancel reports task (t, gen): its state (NR_TASK_*, -1 if stale,
 * or running with every return sealed: it has returned, only its finish is left),
 * the process running it (*pid), its NR_SPEC_* (*kind), and its return ids
 * (up to *nret of them written to rets; *nret set to how many it has; a
 * streaming generator that has yielded adds its pending cell last); with
 * mark 1 it is also marked cancelled: it never starts, and is not retried
 * (mark 2: only if it has not started, in the same step).
 * nr_task_signal sends sig to the process running (t, gen) if it still runs
 * it (under the lock, so the signal never reaches a process that moved on):
 * 1 if sent.  nr_task_children writes up to max (gen << 32 | t) of the live
 * tasks submitted by task `parent` (same packing); returns how many exist. */
uint32_t nr_task_of(nr_region_t *r, uint64_t ret_id, uint32_t *gen);
int nr_task_cancel(nr_region_t *r, uint32_t t, uint32_t gen, int mark, int32_t *pid,
                   uint32_t *kind, uint64_t *rets, uint32_t *nret);
int nr_task_signal(nr_region_t *r, uint32_t t, uint32_t gen, int sig);
/* A cancelled task waiting in the xq (for resources, perhaps forever) is
 * released at once, its returns sealed by the canceller: 1 if it was. */
int nr_task_drop(nr_region_t *r, uint32_t t, uint32_t gen);
/* What a cancelled actor call that was running fails with when its actor
 * dies (an object, pinned; set once, at the first such cancel). */
int nr_cancel_set_error(nr_region_t *r, uint64_t err);
uint32_t nr_task_children(nr_region_t *r, uint64_t parent, uint64_t *out, uint32_t max);

/* Processes */
int nr_proc_alloc(nr_region_t *r, uint32_t kind);       /* slot, -1 if none */
void nr_proc_started(nr_region_t *r, uint32_t slot, int32_t pid);
void nr_proc_block(nr_region_t *r, uint32_t slot);       /* waits in get(): lends its CPUs */
/* 1 when no worker can run the queued work: every pool worker waits in
 * get() and no more may start.  Also true for an instant while a worker
 * whose object was just sealed has not woken yet: callers must see it
 * persist before calling it a deadlock. */
int nr_stuck(nr_region_t *r);
/* Marks slot's task as waiting with a timeout (1) or not (0), for nr_stuck. */
void nr_proc_may_progress(nr_region_t *r, uint32_t slot, int on);
void nr_proc_unblock(nr_region_t *r, uint32_t slot);
/* A process ended; returns the task it was running (index + 1) or 0. */
uint32_t nr_proc_reap(nr_region_t *r, uint32_t slot);
/* Zygote: slots to start now (marked STARTING), written to out[], count returned. */
int nr_spawn_take(nr_region_t *r, uint32_t *out, int max_out);
/* Zygote: a slot from nr_spawn_take that got no process (fork failed); asked for again. */
void nr_spawn_giveback(nr_region_t *r, uint32_t slot);
void nr_shutdown(nr_region_t *r);
void nr_stats(nr_region_t *r, nr_stats_t *s);

#endif
