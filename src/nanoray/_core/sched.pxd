# Declarations of csrc/nr_sched.h: objects, tasks, queues, waiting.
from libc.stdint cimport uint8_t, uint32_t, int32_t, uint64_t, int64_t
from nanoray._core.region cimport nr_region_t

cdef extern from "nr_sched.h" nogil:
    enum:
        NR_OBJ_FREE
        NR_OBJ_PENDING
        NR_OBJ_READY
        NR_OBJ_ERROR
        NR_TASK_FREE
        NR_TASK_WAITING
        NR_TASK_READY
        NR_TASK_RUNNING
        NR_SPEC_TASK
        NR_SPEC_ACTOR_CREATE
        NR_SPEC_ACTOR_CALL
        NR_SPILL_NONE
        NR_SPILL_WRITING
        NR_SPILL_DONE
        NR_WAIT_SEEN

    ctypedef struct nr_object_t:
        uint64_t gen         # generation (the id's high bits)
        uint32_t state       # NR_OBJ_*
        int64_t refs         # reference count
        uint64_t size        # payload bytes
        uint32_t pins        # readers of its payload in memory
        uint32_t spill       # NR_SPILL_*
        uint32_t task        # a task's return: that task (index + 1)
        uint32_t waiters     # get() waiters (low 15 bits), NR_WAIT_SEEN, wait() groups (above)
        uint32_t actor       # slot + 1 of the actor whose handles it counts, 0 if none

    ctypedef struct nr_task_t:
        uint32_t gen         # bumped on free
        uint32_t state       # NR_TASK_*
        uint64_t spec        # arena offset of its nr_spec_t
        int32_t cpus         # milli-CPUs
        int32_t retries_left # re-runs left if its process dies
        uint32_t attempts    # times started
        uint32_t kind        # NR_SPEC_*
        uint32_t cancelled   # nanoray.cancel() asked for it
        uint32_t res_mask    # resources beyond CPUs it needs
        uint32_t gpu_mask    # while running: its GPU devices
        int32_t res[8]       # amounts (NR_RES)
        uint32_t pool        # placement group (index + 1), 0 if none
        uint32_t pool_gen    # and its generation
        uint32_t proc        # slot + 1 of the process running it
        uint32_t target      # slot + 1 it is routed to (an actor's), 0 = any worker
        uint32_t deps_left   # argument objects not yet sealed

    ctypedef struct nr_spec_t:
        uint64_t func_id     # object holding the pickled function
        uint64_t args_obj    # object holding large args, 0 if inline
        uint64_t args_len    # bytes of inline args payload
        uint32_t nret        # return objects
        uint32_t ndeps       # top-level ref arguments
        uint32_t ncontained  # refs nested in the args
        uint32_t kind        # NR_SPEC_*: a task, an actor's creation, a method call
        uint64_t parent      # (gen << 32) | index + 1 of the submitting task, 0 if none
        uint64_t stream_cell # a streaming generator's pending cell once it yielded (0: ret[0])
        uint64_t streamed    # values it has yielded (a re-run skips them)

    ctypedef struct nr_payload_t:
        uint32_t nbufs       # out-of-band buffers
        uint32_t ncontained  # refs nested in the value
        uint64_t pickle_len  # bytes of the pickle stream

    ctypedef struct nr_stats_t:
        uint64_t nobjects, ntasks, rq_len, nworkers, nsleeping, nstarting, nidle, nspinning
        uint64_t nblocked, max_workers, xq_len, nbusy, ncpu
        int64_t cpus_total, cpus_avail
        uint64_t arena_used, arena_nallocs, arena_brk, arena_peak, arena_size
        uint64_t repairs
        uint64_t nactors, lock_stalls
        uint64_t spilled_objects, spilled_bytes, spills, restores

    uint32_t nr_id_index1(uint64_t id)   # index + 1 in the object table
    uint64_t *nr_spec_ids(nr_spec_t *s)
    char *nr_spec_args(nr_spec_t *s)
    uint64_t *nr_payload_contained(nr_payload_t *p)

    uint64_t nr_object_create(nr_region_t *r)
    uint64_t nr_put(nr_region_t *r, uint64_t data, uint64_t size)
    int nr_object_seal(nr_region_t *r, uint64_t id, uint64_t data, uint64_t size, int is_error)
    int nr_stream_seal(nr_region_t *r, uint32_t t, uint64_t cell, uint64_t data, uint64_t size,
                       uint64_t next)
    void nr_object_incref(nr_region_t *r, uint64_t id)
    int nr_object_try_incref(nr_region_t *r, uint64_t id, int ready_only)
    void nr_object_decref(nr_region_t *r, uint64_t id)
    nr_object_t *nr_object_lookup(nr_region_t *r, uint64_t id)
    void nr_object_mark_seen(nr_region_t *r, uint64_t id, int pending_too)
    int nr_object_release(nr_region_t *r, uint64_t id, int unseen_back)
    void nr_release_flush(nr_region_t *r)
    int nr_release_flush_all(nr_region_t *r)
    uint32_t nr_release_pending(nr_region_t *r, uint32_t slot)
    int nr_object_info(nr_region_t *r, uint64_t id, uint64_t *data, uint64_t *size)
    int nr_object_wait(nr_region_t *r, uint64_t id, int64_t timeout_ns, int64_t spin_ns)
    int nr_wait_many(nr_region_t *r, const uint64_t *ids, int n, int want,
                     int64_t timeout_ns, int64_t spin_ns, uint8_t *ready)
    int nr_wait_many_or(nr_region_t *r, const uint64_t *ids, int n, int want,
                        int64_t timeout_ns, int64_t spin_ns, uint8_t *ready, uint32_t *cancel)
    void nr_poke_waiters(nr_region_t *r)

    uint32_t nr_task_submit(nr_region_t *r, uint64_t spec, int32_t cpus, int32_t retries,
                            uint32_t target_slot1, const int32_t *res, uint64_t pool,
                            uint64_t env, uint64_t *ret_out)
    uint32_t nr_task_submit_copy(nr_region_t *r, const void *spec, uint64_t size, int32_t cpus,
                                 int32_t retries, uint32_t target_slot1, const int32_t *res,
                                 uint64_t pool, uint64_t env, uint64_t *ret_out)
    uint64_t nr_pg_create(nr_region_t *r, uint32_t nb, const int32_t *cpus, const int32_t *res,
                          uint32_t *slots)
    uint32_t NR_POOL_ANY
    int nr_pg_remove(nr_region_t *r, uint64_t pool)
    int nr_pg_state(nr_region_t *r, uint64_t pool)
    uint32_t nr_pg_tasks(nr_region_t *r, uint64_t pool, uint64_t *out, uint32_t max)
    int nr_pg_set_gone_error(nr_region_t *r, uint64_t err)
    int nr_pg_fits(nr_region_t *r, uint64_t pool, int32_t cpus, const int32_t *res)
    int nr_resource_define(nr_region_t *r, uint32_t k, const char *name, int64_t total)
    void nr_resources(nr_region_t *r, int64_t *total, int64_t *avail)
    nr_task_t *nr_task(nr_region_t *r, uint32_t t)
    int64_t nr_task_next(nr_region_t *r, uint32_t slot, int64_t spin_ns, int64_t idle_timeout_ns)
    int64_t nr_task_finish_next(nr_region_t *r, uint32_t slot, uint32_t t, int64_t spin_ns,
                                int64_t idle_timeout_ns)
    int64_t nr_task_try_next(nr_region_t *r, uint32_t slot)
    int64_t nr_task_finish_try_next(nr_region_t *r, uint32_t slot, uint32_t done)
    int64_t nr_task_seal_finish_try_next(nr_region_t *r, uint32_t slot, uint32_t done, uint64_t id,
                                         uint64_t data, uint64_t size)
    int64_t nr_task_seal_finish_retire(nr_region_t *r, uint32_t slot, uint32_t done, uint64_t id,
                                         uint64_t data, uint64_t size)
    void nr_task_finish(nr_region_t *r, uint32_t slot, uint32_t t)
    int nr_task_retry(nr_region_t *r, uint32_t t)
    void nr_task_release(nr_region_t *r, uint32_t t)
    int nr_task_use_retry(nr_region_t *r, uint32_t t)
    uint32_t nr_task_of(nr_region_t *r, uint64_t ret_id, uint32_t *gen)
    int nr_task_cancel(nr_region_t *r, uint32_t t, uint32_t gen, int mark, int32_t *pid,
                       uint32_t *kind, uint64_t *rets, uint32_t *nret)
    int nr_task_signal(nr_region_t *r, uint32_t t, uint32_t gen, int sig)
    int nr_task_drop(nr_region_t *r, uint32_t t, uint32_t gen)
    int nr_cancel_set_error(nr_region_t *r, uint64_t err)
    uint32_t nr_task_children(nr_region_t *r, uint64_t parent, uint64_t *out, uint32_t max)

    int nr_proc_alloc(nr_region_t *r, uint32_t kind)
    void nr_proc_started(nr_region_t *r, uint32_t slot, int32_t pid)
    void nr_proc_block(nr_region_t *r, uint32_t slot)
    int nr_stuck(nr_region_t *r)
    void nr_proc_may_progress(nr_region_t *r, uint32_t slot, int on)
    void nr_proc_unblock(nr_region_t *r, uint32_t slot)
    uint32_t nr_proc_reap(nr_region_t *r, uint32_t slot)
    uint32_t nr_sweep_uncounted(nr_region_t *r)
    int nr_object_pin(nr_region_t *r, uint64_t id, uint64_t *data, uint64_t *size, uint32_t *spill,
                      uint64_t *file)
    void nr_object_unpin(nr_region_t *r, uint64_t id)
    uint64_t nr_spill_pick(nr_region_t *r, uint64_t need, uint64_t *data, uint64_t *size,
                           uint64_t *file)
    int nr_spill_commit(nr_region_t *r, uint64_t id)
    int nr_spill_commit_as(nr_region_t *r, uint64_t id, uint64_t size)
    void nr_spill_abort(nr_region_t *r, uint64_t id)
    int nr_spill_restore(nr_region_t *r, uint64_t id, uint64_t file, uint64_t off)
    int nr_spill_path(nr_region_t *r, uint64_t file, char *out, size_t cap)
    uint64_t nr_put_pinned(nr_region_t *r, uint64_t data, uint64_t size)
    int nr_spill_set_dir(nr_region_t *r, const char *dir)
    int nr_spawn_take(nr_region_t *r, uint32_t *out, int max_out)
    void nr_spawn_giveback(nr_region_t *r, uint32_t slot)
    void nr_shutdown(nr_region_t *r)
    void nr_stats(nr_region_t *r, nr_stats_t *s)
