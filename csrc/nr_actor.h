/* nr_actor: actors on the shared scheduler.
 *
 * An actor is a process slot of kind NR_KIND_ACTOR.  Its method calls are
 * tasks routed to that slot (task->target): the same submit path, the same
 * lock, the same queue code as any task.  What differs:
 *
 *   - The creation task (__init__) is held apart (create_ready) and always
 *     runs first; calls queue behind it until it finishes (NR_ACTOR_CREATED).
 *   - An object, the handle object, counts the actor's handles in every
 *     process, and every pending call holds a count on it too.  When it is
 *     freed, the actor is orphaned: its process exits once its queue is
 *     empty, and its slot is reused.
 *   - The slot's generation is bumped whenever the slot is freed, so
 *     (slot, generation) never names a later actor.
 *   - When the process dies, the zygote calls nr_actor_reap: with restarts
 *     left, the creation task is queued again ahead of the calls (calls that
 *     were running retry per their retries, else fail) and a new process is
 *     forked into the same slot.  Otherwise the actor is dead: every queued
 *     call, and every call routed to it later, fails at once with the death
 *     object's payload (a copy of it, sealed as an error).  A dead actor's
 *     slot stays as a tombstone until its handle object is freed.
 *   - Named actors are found through a small name table in the region.
 *   - Two lists per actor: the queue, of calls it may run now (popped from
 *     the head), and the held list, in submission order, of calls waiting
 *     for their arguments and, for a sequential actor, the later calls of
 *     the same caller (each caller's calls run in its order; one caller's
 *     pending argument never holds up another's calls).  A count per caller
 *     says whether it has held calls.  Popping is O(1); a call whose
 *     arguments become ready releases its caller's leading calls.
 */
#ifndef NR_ACTOR_H
#define NR_ACTOR_H

#include "nr_region.h"

enum {
    NR_ACTOR_CREATED = 1,      /* __init__ finished: calls may run */
    NR_ACTOR_ORPHANED = 2,     /* its handle object was freed */
    NR_ACTOR_DEAD = 4,         /* will never run again; calls fail */
    NR_ACTOR_NO_RESTART = 8,   /* killed with no_restart, or exited on purpose */
    NR_ACTOR_KILLED = 16,      /* kill() asked; a process that starts now exits */
    NR_ACTOR_DETACHED = 32,    /* holds a count on its own handle object until it dies */
    NR_ACTOR_UNORDERED = 64,   /* threaded or async: a call never waits behind another's
                                * pending arguments (sequential actors keep each
                                * caller's order) */
    NR_ACTOR_INFEASIBLE = 128, /* asks for more than the machine has: holds nothing, and no
                                * process starts for it (calls stay pending, as in Ray)
                                * until it is killed or orphaned, when one starts that
                                * exits at once */
    NR_ACTOR_OWNER_DIED = 256, /* killed because the process that created it ended */
};

#define NR_NAME_MAX 112        /* bytes of "namespace\x1fname": an entry is 128 bytes */

typedef struct {
    uint64_t handle_obj;       /* 0 = free entry */
    uint32_t slot1, gen;
    char key[NR_NAME_MAX];
} nr_name_t;
_Static_assert(sizeof(nr_name_t) == 128, "the region lays out 128 bytes per name");

/* Under the lock: an orphaned actor with nothing left to run exits. */
static inline int nr_actor_should_exit(nr_proc_t *p) {
    return p->kind == NR_KIND_ACTOR && !p->create_ready && !p->nrunning &&
           (((p->aflags & NR_ACTOR_ORPHANED) && !p->q_head && !p->h_head) ||
            (p->aflags & NR_ACTOR_DEAD));
}

/* Takes a free slot for a new actor whose handles handle_obj counts, and
 * asks the zygote for its process.  With a name (key != NULL) the name is
 * registered too.  Returns the slot (its generation in *gen_out); -1 when
 * no slot is free; -2 when the name is taken by a live actor, whose handle
 * object id is written to *existing; -3 when the name table is full; -4
 * when it needs more CPUs than the runtime has, -5 more of another
 * resource (res: NR_RES amounts beyond CPUs, or NULL), held for its life
 * (from placement group `pool`, see nr_pg_create, when not 0). */
int nr_actor_create(nr_region_t *r, uint64_t handle_obj, int32_t max_restarts,
                    int32_t cpus_milli, const int32_t *res, uint64_t pool, uint32_t flags,
                    const char *key, uint32_t *gen_out, uint64_t *existing);
/* Finds a named live actor: 0 and its handle object, slot, generation; -1 if none. */
int nr_actor_lookup(nr_region_t *r, const char *key, uint64_t *handle_obj, uint32_t *slot,
                    uint32_t *gen);
/* The actor itself ends for good (__init__ failed, exit_actor()): every call
 * queued fails with death_obj's payload.  0, or -1 if (slot, gen) is stale. */
int nr_actor_die(nr_region_t *r, uint32_t slot, uint32_t gen, uint64_t death_obj);
/* kill(): marks it (no_restart: never restarted) and SIGKILLs its process
 * while holding the region lock, so the kill never lands inside one of the
 * actor's critical sections.  Returns the pid, 0 when its process has not
 * started yet (it exits when it does), -1 when (slot, gen) is stale or dead. */
int32_t nr_actor_kill(nr_region_t *r, uint32_t slot, uint32_t gen, int no_restart);
/* The zygote saw the actor's process end.  1: restarting (fork a process
 * for it); 0: gone or dead (death_obj is the error its calls now get).
 * Calls it was running that are not retried fail with death_obj, or with
 * unavail_obj (when not 0) if the actor restarts. */
int nr_actor_reap(nr_region_t *r, uint32_t slot, uint64_t death_obj, uint64_t unavail_obj);
/* (state, flags, restarts, pid) of the actor in (slot, gen); -1 if stale. */
int nr_actor_info(nr_region_t *r, uint32_t slot, uint32_t gen, uint32_t *flags,
                  uint32_t *restarts, int32_t *pid);

#endif
