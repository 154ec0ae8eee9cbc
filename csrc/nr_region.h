/* nr_region: the one shared memory region every nanoray process maps.
 *
 * The driver creates an anonymous memfd, sizes it, maps it MAP_SHARED and
 * hands the descriptor to the zygote, whose forked workers inherit the
 * mapping.  Nothing is ever named in /dev/shm: the kernel frees the memory
 * with the last mapping, however the processes die.
 *
 * Processes map the region at different addresses, so every link inside it
 * is an offset or an index, never a pointer.
 *
 * Layout (each part starts on a page boundary):
 *   header | proc slots | object table | task table | dep nodes | actor names |
 *   ledgers | held counts | undo log | arena
 *
 * Ledgers: each process slot has an int32 per object-table entry, the
 * counts that process holds on that object (its ObjectRefs and pinned
 * views).  Only the process itself writes its ledger (taking a count first,
 * then recording it; unrecording before giving it back), so whatever it
 * dies doing, the ledger never claims more than it holds: reaping a dead
 * process gives back exactly its recorded counts, at worst leaking one it
 * was in the middle of taking.  Untouched pages cost nothing.
 *
 * Tables are sparse: entries past a table's high-water mark were never
 * touched, so a large table costs no memory until used (memfd pages are
 * allocated on first touch).
 *
 * Concurrency: one process-shared robust mutex guards the tables, queues
 * and the arena.  Critical sections are a few dozen instructions; on two
 * cores one uncontended lock (~20 ns) beats lock-free structures in both
 * speed and in how simply a dead holder can be repaired.  Reference counts
 * and readiness words are touched with atomics outside the lock.
 * This header never includes Python.h.
 */
#ifndef NR_REGION_H
#define NR_REGION_H

#include <stdint.h>
#include <stddef.h>
#include <pthread.h>

/* Changes with the header's layout: a process of another version refuses
 * to attach (EINVAL) instead of misreading it.  "NANARAY7" little endian. */
#define NR_MAGIC 0x37594152414e414eULL
#define NR_PAGE 4096u
#define NR_ALIGN 64u                   /* cache line; numpy wants >= 16 */
#define NR_NBINS 64
#define NR_MAX_NAMES 1024u            /* named actors alive at once */
/* Resources beyond CPUs (which keep fields of their own, on the fast path):
 * kind 1 is GPUs (milli-GPUs; fractions share a device), 2 is memory (MiB),
 * 3.. are custom resources named at init (milli-units). */
#define NR_RES 8
#define NR_RES_GPU 1
#define NR_RES_MEM 2
#define NR_RES_NAME 32
#define NR_MAX_GPUS 32
#define NR_MAX_PG 256                  /* placement-group bundles reserved at once */
enum { NR_PG_FREE = 0, NR_PG_PENDING, NR_PG_CREATED };

/* A placement group's bundle: resources reserved from the node for the
 * tasks and actors scheduled in it.  A group of n bundles holds n slots,
 * chained from its first (head) in bundle order, all with the group's
 * state and generation: it is pending until the node has them all free,
 * and placed at once. */
typedef struct {
    uint32_t state;       /* NR_PG_* */
    uint32_t gen;         /* bumped when removed: (index + 1, gen) names it */
    uint32_t head;        /* the slot index of its group's first bundle */
    uint32_t nb;          /* how many bundles its group has */
    uint32_t next;        /* the slot index + 1 of its group's next bundle, 0: last */
    int32_t cpus_res;     /* milli-CPUs reserved */
    int32_t cpus_avail;   /* of those, free */
    int64_t res_res[NR_RES];   /* resources beyond CPUs reserved (res_res[0] unused) */
    int64_t res_avail[NR_RES];
} nr_pg_t;

#define NR_NCACHE 6           /* small blocks each process keeps at hand: two each of
                               * 192, 256 and 512 bytes (payloads of 128, 192, 448) */
#define NR_SMALL_PAYLOAD 448u  /* the largest payload a cached block holds */
#define NR_REL_RING 64u        /* frees a process may put off (nr_object_release) */
#define NR_WAIT_GROUPS 16u     /* futex words the waiters on several objects spread over */

/* Process slot kinds and states. */
enum { NR_PROC_FREE = 0, NR_PROC_STARTING, NR_PROC_IDLE, NR_PROC_RUNNING,
       NR_PROC_BLOCKED, NR_PROC_EXITED };
enum { NR_KIND_NONE = 0, NR_KIND_DRIVER, NR_KIND_WORKER, NR_KIND_ACTOR };

typedef struct {
    uint32_t wake;        /* futex word: bumped to wake this process */
    uint32_t sleeping;    /* 1 while parked on `wake` waiting for work */
    int32_t pid;          /* OS process id, 0 until started */
    uint32_t state;       /* NR_PROC_* */
    uint32_t kind;        /* NR_KIND_* */
    uint32_t task;        /* task index + 1 being run, 0 when none (pool workers) */
    uint32_t q_head;      /* private queue (tasks routed to this process) */
    uint32_t q_tail;
    uint32_t q_len;
    int32_t cpus_held;    /* milli-CPUs held: the running task's, or an actor's for life */
    uint32_t sleep_next;  /* link in the sleepers list (slot + 1) */
    uint32_t spinning;    /* 1 while spinning idle for work */
    uint32_t may_progress; /* 1 while a waiter of its task has a timeout: not stuck */
    uint32_t gen;         /* bumped each time the slot is freed: (slot, gen) names an actor */
    /* Actors only (see nr_actor.h). */
    uint32_t aflags;      /* NR_ACTOR_* */
    uint32_t spawn_req;   /* 1: the zygote should fork a process into this slot */
    uint32_t create_task; /* the creation task (index + 1), kept while restarts remain */
    uint32_t create_ready;/* the creation task, queued ahead of every call (index + 1) */
    int32_t restarts_left; /* -1: forever */
    uint32_t restarts;    /* times the actor was restarted */
    uint32_t nrunning;    /* calls running now (threaded and async actors run several) */
    uint32_t max_pending; /* queued calls allowed, 0 = no limit */
    uint64_t handle_obj;  /* object counting the handles (and pending calls) */
    uint64_t death_obj;   /* error payload every call fails with once dead */
    uint32_t ledger_hwm;  /* ledger entries below this may be non-zero */
    uint64_t writing[2];  /* arena blocks it allocated and is still writing (not yet
                           * owned by an object or a task): freed if it dies */
    uint32_t h_head;      /* actors: held calls (see nr_actor.h), in submission order */
    uint32_t h_tail;
    uint64_t spilling;    /* the object it is writing out (NR_SPILL_WRITING), 0 if none */
    uint64_t spill_file;  /* and the file it writes it to */
    uint32_t res_mask;    /* resources beyond CPUs it holds (bit k: res_held[k] > 0) */
    uint32_t gpu_mask;    /* the GPU devices they include */
    int32_t res_held[NR_RES]; /* amounts held: the running task's, or an actor's for life */
    uint32_t pool;        /* placement group (index + 1) they are held from, 0: the node */
    uint32_t pool_gen;    /* and its generation (a group removed since: the node's again) */
    uint64_t cache[NR_NCACHE]; /* small blocks it holds for its next payloads and specs
                           * (nr_arena_alloc_small): taken with a CAS that sets bit 0,
                           * no lock; owned ones are cleared under the lock, and the
                           * rest are freed if it dies, taken or not */
    uint64_t env;         /* pool workers: 0 (fresh) until their first task, then
                           * NR_ENV_SET | that task's runtime_env key (nr_task_t.env):
                           * from then on they take only tasks of that key */
    /* Frees put off by nr_object_release: ids of small objects whose last
     * count this process dropped, freed at the start of its next section,
     * by a flush (stats, waits), or when it is reaped.  A ring with one
     * producer (the process's thread dropping a ref, holding the GIL) and
     * one consumer at a time (a holder of the lock); not logged, not in
     * the digest (the frees are, one committed step each). */
    uint32_t rel_head __attribute__((aligned(64)));   /* lines of their own: */
    uint32_t rel_tail;                                /* written per drop */
    uint64_t rel_ids[NR_REL_RING];
    /* Actors: the process that created it (slot + 1, and its pid then; 0
     * for a detached actor).  When that process ends (an actor's, for any
     * reason; a pool worker's, by dying) the actor ends with it, as in Ray
     * (nri_actor_owner_gone).  Set at creation, read at reaps: the spare
     * bytes of the ring's last line. */
    uint32_t owner_slot1;
    int32_t owner_pid;
} nr_proc_t;
_Static_assert(offsetof(nr_proc_t, rel_head) == 256, "four cache lines of process state");
_Static_assert(sizeof(nr_proc_t) % 64 == 0, "whole cache lines per process slot");
_Static_assert(sizeof(nr_proc_t) == 832, "the owner fields fit the ring's last line");

typedef struct {
    uint64_t brk;         /* arena offset where never-used memory begins */
    uint64_t end;         /* arena offset of the end */
    uint64_t bitmap;      /* bit b set when bin b is non-empty */
    uint64_t bins[NR_NBINS]; /* head block offset of each free list, 0 = empty */
    uint64_t used;        /* bytes in allocated blocks (headers included) */
    uint64_t nallocs;     /* live allocations */
    uint64_t peak;        /* highest brk reached (memory ever touched) */
    uint64_t last;        /* offset of the block that ends at brk, 0 if none */
    uint64_t cached;      /* bytes of `used` in processes' small-block caches (not yet
                           * holding anything: left out of the store's use) */
    uint64_t ncached;     /* and those blocks */
} nr_arena_t;

#define NR_LINE __attribute__((aligned(64)))

/* Grouped by who writes what, one cache line group each, so that processes
 * spinning on a word (queue heads, shutdown) or reading table offsets on
 * every access are not slowed by writes to unrelated counters. */
typedef struct {
    /* Read-mostly: set at creation (shutdown: once, at the end). */
    uint64_t magic;
    uint64_t size;            /* total mapped bytes */
    uint64_t session;         /* random at creation: tells runtimes apart */
    uint64_t procs_off, objs_off, tasks_off, deps_off, names_off, ledgers_off, held_off,
             undo_off, arena_off, events_off;
    uint32_t undo_cap;        /* undo log entries (see nr_undo.h) */
    uint32_t events_cap;      /* task events kept (a power of two; see nr_event_t) */
    uint32_t max_procs, max_objects, max_tasks, max_deps, max_names;
    int32_t cpus_total;       /* milli-CPUs */
    uint32_t min_workers, max_workers;
    uint32_t shutdown;        /* set once: every waiter returns */
    char spill_dir[256];      /* where spilled payloads go ("" until set at init) */
    char res_names[NR_RES][NR_RES_NAME]; /* resource kinds ("" unused), set at init */
    int64_t res_total[NR_RES];
    uint32_t ngpus;           /* GPU devices 0..ngpus-1 */

    /* The lock, alone in its line with its holder's pid (the taker owns the
     * line anyway); then counters written once in a long while. */
    pthread_mutex_t lock NR_LINE; /* guards everything below but atomics */
    int32_t lock_pid;             /* the process that last took the lock (for messages) */
    uint32_t repairs;             /* locks recovered from a dead holder */
    uint32_t lock_stalls;         /* waits for the lock that passed NR_LOCK_STALL_NS */
    /* The log's count, which every logged store of a section writes: in a
     * line of its own, not the lock's, which waiters for the lock read
     * (and each such read took the line from the holder, once per store). */
    uint32_t undo_n NR_LINE;      /* entries in the undo log of the section under way */
    uint32_t undo_overflow;       /* the section outgrew the log: a death in it cannot be undone */
    uint32_t broken;              /* a repair failed: the runtime shut down rather than go on */
    uint32_t rollbacks;           /* sections undone after their holder died */
    uint64_t undone;              /* undo entries applied by those rollbacks */

    /* Scheduler state, written under the lock. */
    uint32_t rq_head NR_LINE;     /* shared ready queue (task index + 1) */
    uint32_t rq_tail;
    uint32_t nq_head, nq_tail;    /* nested ready queue: tasks submitted from inside tasks
                                   * and actors, served first so the children of a task
                                   * blocked in get() run before new top-level work */
    uint32_t nq_streak;           /* nested tasks taken in a row (see next_queue) */
    uint32_t rq_len;              /* tasks in both ready queues */
    int32_t cpus_avail;           /* milli-CPUs */
    uint32_t sleep_head;          /* sleeping worker slots (slot + 1) */
    uint32_t nsleeping;
    uint32_t nspinning;
    uint32_t nworkers;            /* live or starting worker processes */
    uint32_t nstarting;
    uint32_t nidle;               /* pool workers with no task (sleeping, spinning, or between tasks) */
    uint32_t nblocked;            /* pool workers whose task waits in get() */
    uint32_t nbusy;               /* processes of any kind running a task or call now */
    uint32_t ncpu;                /* CPUs this machine lets the runtime's processes use:
                                   * a waiter spins only while nbusy < ncpu (a spin that
                                   * would take a CPU from running work sleeps instead) */
    uint32_t spawn_pending;       /* a spawn request is in the zygote's fd */
    uint32_t spawn_fresh;         /* and it is for a fresh worker: queued work has CPUs, but
                                   * every idle worker is keyed to another runtime_env */
    uint32_t nenv_workers;        /* live pool workers keyed to a runtime_env (not plain) */
    uint32_t evict;               /* 1: at max_workers, a fresh worker is wanted: the next
                                   * idle pool worker that finds nothing it may run retires */
    uint32_t proc_hwm;            /* process slots below this have been used */
    uint32_t fail_head;           /* tasks routed to a dead actor, to fail (index + 1) */
    uint32_t nspilled;            /* objects whose payload is in a file */
    uint64_t spilled_bytes;
    uint64_t spills, restores;    /* statistics: not undone */
    uint64_t spill_seq;           /* names spill files: each spill writes a new one */
    uint32_t zombie_head;         /* objects whose last count went while freeing another:
                                   * freed one per step at the end of the section */
    uint32_t xq_head, xq_tail;    /* ready tasks needing more than CPUs (or more CPUs than
                                   * there are): taken in order as each one fits, so one
                                   * that does not fit yet (or ever) holds up no other */
    uint32_t xnq_head, xnq_tail;  /* the same for nested tasks (submitted from inside tasks
                                   * and actors): served first, as the nested queue is */
    uint32_t xq_nstreak;          /* nested xq tasks taken in a row (see nri_xq_first_fit) */
    uint32_t xq_len;              /* tasks in both */
    uint32_t xq_gen;              /* bumped when an xq task may newly fit: one enters,
                                   * or resources beyond CPUs are given back */
    uint32_t xq_miss_gen;         /* a full scan found none fitting at this xq_gen */
    int32_t xq_miss_cpus;         /* and with this many CPUs free (more: look again) */
    uint32_t xq_miss;             /* 1 while that result stands */
    uint32_t xq_emiss;            /* the same, for pool workers of one runtime_env: */
    uint32_t xq_emiss_gen;        /* a full scan found none fitting that such a worker */
    int32_t xq_emiss_cpus;        /* may run (tasks of other environments skipped) */
    uint64_t xq_emiss_env;        /* its nr_proc_t.env */
    int64_t res_avail[NR_RES];    /* may dip below zero while actors oversubscribe */
    int32_t gpu_avail[NR_MAX_GPUS]; /* milli-GPUs free on each device */
    uint32_t npg_pending;         /* placement-group bundles waiting for the node's resources */
    uint64_t pg_gone_err;         /* error payload (counted, pinned) for the tasks of a
                                   * group that was removed, set at init */
    uint64_t cancel_err;          /* the same, for a cancelled actor call whose actor
                                   * died while running it (set at the first cancel) */
    nr_pg_t pgs[NR_MAX_PG];

    /* Tables, written under the lock. */
    uint32_t obj_hwm NR_LINE, obj_free;   /* free list heads hold index + 1 */
    uint32_t task_hwm, task_free;
    uint32_t dep_hwm, dep_free;
    uint32_t nobjects, ntasks;    /* live counts */
    uint32_t ndeps_live;          /* dep nodes in use */
    uint32_t nactors;             /* live actor slots (tombstones included) */

    /* The futex words that waiters on several objects (wait(), futures)
     * sleep on, one per group of threads (a thread's group: its tid modulo
     * NR_WAIT_GROUPS); a waiter on one object sleeps on that object's state
     * word.  An object's `waiters` marks the groups that watch it, and its
     * seal bumps and wakes those groups' words only. */
    uint32_t wait_seq[NR_WAIT_GROUPS] NR_LINE;
    uint32_t errors NR_LINE;      /* bumped at each error sealed: a get() of many looks again */

    /* Task events (nanoray.timeline()): taken by an atomic add, no lock. */
    uint64_t events_next NR_LINE;

    nr_arena_t arena NR_LINE;

    /* The cold path (nr_prefault.h): hints and statistics, never undone. */
    uint64_t committed NR_LINE;   /* arena pages below this offset are allocated in the memfd
                                   * by the prefault thread (only grows; 0 until it runs) */
    uint64_t pf_window;           /* bytes past brk it keeps allocated; 0: not running */
    uint64_t pf_bytes;            /* bytes it allocated in all */
    uint32_t pf_seq;              /* futex word: bumped to wake it */
    uint32_t pf_sleeping;         /* 1 while it waits on pf_seq */
    int32_t pf_pid;               /* the process it runs in, 0 if none */
    int32_t pf_errno;             /* why it stopped early (ENOMEM...), 0 if it did not */
    int64_t pf_quiet_until;       /* CLOCK_MONOTONIC ns: a large copy runs until about then */
    int64_t hold_since;           /* CLOCK_MONOTONIC ns: since when plain workers leave a
                                   * CPU to task hold_task of a runtime_env (0: none);
                                   * hints, stored unlogged */
    uint64_t hold_task;           /* (gen << 32) | index of that task */
} nr_header_t;

/* One finished task or actor call, for nanoray.timeline(): kept in a ring
 * of events_cap entries (the newest win).  A writer takes an index with an
 * atomic add and writes seq last, so a reader keeps only entries whose seq
 * is the same before and after it copies them. */
typedef struct {
    uint64_t seq;             /* index + 1 once written; 0 while being written */
    int64_t start_ns, end_ns; /* CLOCK_MONOTONIC */
    uint64_t task;            /* (gen << 32) | index + 1 */
    uint64_t bytes_in, bytes_out;  /* its arguments' payloads, and its returns' */
    int32_t pid;
    uint32_t kind;            /* NR_SPEC_* */
    uint32_t failed;          /* it raised */
    char name[68];            /* "f", "Cls.method" (cut, NUL-terminated) */
} nr_event_t;
_Static_assert(sizeof(nr_event_t) == 128, "two cache lines per event");

/* Process-local handle to the region. */
typedef struct {
    char *base;
    nr_header_t *hdr;
    size_t size;
    int fd;         /* memfd */
    int spawn_fd;   /* eventfd that wakes the zygote, -1 if none */
    uint32_t slot;  /* this process's proc slot */
    int32_t *ledger;        /* this process's ledger (workers, actors); NULL in the driver */
    uint32_t *ledger_hwm;   /* its high-water mark, in its proc slot */
    void *undo_log;         /* the undo log (nr_undo.h), and its entries */
    uint32_t undo_cap;
    int borrowed;           /* it acts in another process's slot (the zygote in the
                             * driver's): no small-block cache of its own there */
} nr_region_t;

typedef struct {
    uint64_t arena_bytes;
    uint32_t max_procs, max_objects, max_tasks, max_deps;
    int32_t cpus_milli;
    uint32_t min_workers, max_workers;
} nr_config_t;

int nr_region_create(nr_region_t *r, const nr_config_t *cfg);   /* 0 or -errno */
/* Records a finished task (no lock: tens of nanoseconds). */
void nr_event_record(nr_region_t *r, uint64_t task, uint32_t kind, int64_t start_ns,
                     int64_t end_ns, uint64_t bytes_in, uint64_t bytes_out, int failed,
                     int32_t pid, const char *name, size_t name_len);
/* Copies up to max of the newest events, oldest first; returns how many. */
uint32_t nr_events_read(nr_region_t *r, nr_event_t *out, uint32_t max);
int nr_region_attach(nr_region_t *r, int fd);                   /* 0 or -errno */
void nr_region_detach(nr_region_t *r);

/* Takes the lock; if its last holder died inside a critical section, first
 * undoes that section (nr_undo.h) and checks the structures. */
void nr_lock(nr_region_t *r);
/* Frees what the process in slot put off (nr_object_release), one
 * committed step each, with the lock held and the log empty: nr_lock for
 * this process's own, a reap for a dead one's. */
void nri_release_drain(nr_region_t *r, uint32_t slot);
/* Bumps and wakes every group's wait word (shutdown, a poke). */
void nri_wake_all_groups(nr_header_t *h);
/* Ends the section: finishes deferred frees and failures (one committed
 * step each), commits, releases the lock, then issues the wake-ups. */
void nr_unlock(nr_region_t *r);
/* The pid that holds the lock now (as far as a glance can tell), 0 if free:
 * for fault-injection tests that aim at critical sections. */
int32_t nr_lock_holder(nr_region_t *r);

/* Called by nr_lock when the last holder died: rolls its section back and
 * verifies; on failure shuts the runtime down (hdr->broken says why). */
void nr_repair(nr_region_t *r);

/* What nr_region_verify found (any may be NULL). */
typedef struct {
    int code;               /* 0, or the first broken invariant (negative) */
    uint64_t orphan_blocks; /* arena blocks in use that nothing owns */
    uint64_t orphan_bytes;
    uint64_t zero_count_objects; /* sealed objects nothing counts, not yet freed */
} nr_verify_t;

/* Checks every table, queue, list and counter against each other and the
 * arena (the lock is held).  0 when consistent, else a negative code naming
 * the first broken invariant.  Orphan blocks are reported, not failed: the
 * runtime may be writing them. */
int nr_region_verify(nr_region_t *r, nr_verify_t *out);
/* A hash of what the structures mean (tests: a rollback restores it). */
uint64_t nr_region_digest(nr_region_t *r);

/* futex on a word in shared memory; timeout_ns < 0 waits forever.
 * Returns 0 when woken (or the word already changed), 1 on timeout. */
int nr_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns);
void nr_futex_wake(uint32_t *word, int n);
/* Wakes every thread sleeping on one object's state word (shutdown, repair). */
void nr_wake_object_waiters(nr_region_t *r);
int64_t nr_now_ns(void);
void nr_cpu_relax(void);

static inline nr_proc_t *nr_proc(nr_region_t *r, uint32_t slot) {
    return (nr_proc_t *)(r->base + r->hdr->procs_off) + slot;
}
static inline void *nr_ptr(nr_region_t *r, uint64_t off) { return r->base + off; }
/* Actors: per caller (slot + 1), how many of its calls the actor holds. */
static inline uint16_t *nr_held_counts(nr_region_t *r, uint32_t slot) {
    return (uint16_t *)(r->base + r->hdr->held_off) + (uint64_t)slot * (r->hdr->max_procs + 1);
}
static inline int32_t *nr_ledger(nr_region_t *r, uint32_t slot) {
    return (int32_t *)(r->base + r->hdr->ledgers_off) + (uint64_t)slot * r->hdr->max_objects;
}

#endif
