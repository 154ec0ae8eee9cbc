# Declarations of csrc/nr_region.h: the shared region, its lock and futexes.
from libc.stdint cimport uint8_t, uint32_t, int32_t, uint64_t, int64_t

cdef extern from "nr_region.h" nogil:
    enum:
        NR_PROC_FREE
        NR_PROC_STARTING
        NR_PROC_IDLE
        NR_PROC_RUNNING
        NR_PROC_BLOCKED
        NR_PROC_EXITED
        NR_KIND_NONE
        NR_KIND_DRIVER
        NR_KIND_WORKER
        NR_KIND_ACTOR
        NR_ALIGN
        NR_SMALL_PAYLOAD
        NR_WAIT_GROUPS
        NR_RES
        NR_RES_GPU
        NR_RES_MEM
        NR_PG_FREE
        NR_PG_PENDING
        NR_PG_CREATED

    ctypedef struct nr_proc_t:
        uint32_t wake        # futex word bumped to wake the process
        uint32_t sleeping    # 1 while parked waiting for work
        int32_t pid          # OS process id
        uint32_t state       # NR_PROC_*
        uint32_t kind        # NR_KIND_*
        uint32_t task        # running task (index + 1)
        uint32_t q_len       # tasks routed to this process
        int32_t cpus_held    # milli-CPUs held
        uint32_t gen         # bumped each time the slot is freed
        uint32_t aflags      # NR_ACTOR_* (actors)
        uint32_t nrunning    # calls running now (actors)
        uint32_t ledger_hwm  # ledger entries below it may be non-zero
        uint32_t max_pending # queued calls allowed, 0 = no limit (actors)
        uint32_t restarts    # times restarted (actors)
        int32_t restarts_left  # restarts allowed still (-1: forever)
        uint32_t q_head      # first task of its private queue
        uint64_t handle_obj  # object counting the handles (actors)
        uint32_t res_mask    # resources beyond CPUs held (bit k)
        uint32_t gpu_mask    # the GPU devices among them
        int32_t res_held[8]  # amounts held (NR_RES)
        uint32_t pool        # placement group they are held from (index + 1), 0: the node
        uint32_t pool_gen
        uint64_t env         # pool workers: 0 until their first task, then keyed to its runtime_env

    ctypedef struct nr_arena_t:
        uint64_t brk         # where never-used memory begins
        uint64_t end         # the arena's end (region offsets)
        uint64_t peak        # highest brk reached
        uint64_t cached      # bytes in processes' small-block caches
        uint64_t ncached

    ctypedef struct nr_pg_t:
        uint32_t head        # the slot of its group's first bundle
    enum: NR_MAX_PG

    ctypedef struct nr_header_t:
        nr_pg_t pgs[256]     # placement-group bundles (NR_MAX_PG)
        uint64_t arena_off   # where the arena starts
        nr_arena_t arena
        uint64_t size        # total mapped bytes
        uint64_t session     # random at creation: tells runtimes apart
        uint32_t max_procs   # proc slots
        uint32_t max_objects # object table entries
        uint32_t max_tasks   # task table entries
        uint32_t obj_hwm     # object entries ever used
        uint32_t events_cap  # task events kept
        uint64_t events_next # task events ever recorded (each finished task or call)
        uint32_t task_hwm    # task entries ever used
        uint64_t names_off   # where the actor name table starts
        uint32_t max_names   # its entries
        uint64_t objs_off    # where the object table starts
        uint32_t shutdown    # set once at shutdown
        uint32_t errors      # bumped at each error sealed
        uint32_t wait_seq[NR_WAIT_GROUPS]  # the futex words of wait()
        char spill_dir[256]  # where spilled payloads go
        uint32_t repairs     # locks recovered from a dead holder
        uint32_t rollbacks   # sections undone after their holder died
        uint64_t undone      # undo entries applied
        uint32_t broken      # a repair failed: shut down
        uint32_t undo_n      # undo entries of the section under way
        int32_t cpus_total   # milli-CPUs
        char res_names[8][32]  # resource kinds beyond CPUs ("" unused)
        uint32_t ngpus       # GPU devices
        uint64_t committed   # arena pages below it are allocated by the prefault thread
        uint64_t pf_window   # bytes past brk it keeps ready, 0: not running
        uint64_t cancel_err  # what a cancelled running actor call fails with if its actor dies
        uint64_t pf_bytes    # bytes it made ready in all
        int32_t pf_pid       # the process it runs in
        int32_t pf_errno     # why it stopped early, 0 if it did not

    ctypedef struct nr_region_t:
        char *base           # where this process mapped it
        nr_header_t *hdr     # == base
        size_t size          # mapped bytes
        int fd               # the memfd
        int spawn_fd         # eventfd that wakes the zygote, -1 if none
        uint32_t slot        # this process's proc slot
        int32_t *ledger      # this process's ledger, NULL when it keeps none
        uint32_t *ledger_hwm # its high-water mark
        int borrowed         # it acts in another process's slot: no small-block cache

    ctypedef struct nr_config_t:
        uint64_t arena_bytes # object store bytes
        uint32_t max_procs   # proc slots
        uint32_t max_objects # object table entries
        uint32_t max_tasks   # task table entries
        uint32_t max_deps    # dependency edges
        int32_t cpus_milli   # CPUs to schedule, in thousandths
        uint32_t min_workers # pool workers kept alive
        uint32_t max_workers # pool workers at most (blocked ones included)

    ctypedef struct nr_verify_t:
        int code                   # 0, or the first broken invariant
        uint64_t orphan_blocks     # used blocks nothing owns
        uint64_t orphan_bytes
        uint64_t zero_count_objects

    int nr_region_verify(nr_region_t *r, nr_verify_t *out)
    uint64_t nr_region_digest(nr_region_t *r)
    void nr_repair(nr_region_t *r)

    int nr_region_create(nr_region_t *r, const nr_config_t *cfg)
    int nr_region_attach(nr_region_t *r, int fd)
    void nr_region_detach(nr_region_t *r)
    void nr_lock(nr_region_t *r)
    void nr_unlock(nr_region_t *r)
    int32_t nr_lock_holder(nr_region_t *r)
    int64_t nr_now_ns()
    ctypedef struct nr_event_t:
        uint64_t seq
        int64_t start_ns, end_ns
        uint64_t task, bytes_in, bytes_out
        int32_t pid
        uint32_t kind, failed
        char name[68]
    void nr_event_record(nr_region_t *r, uint64_t task, uint32_t kind, int64_t start_ns,
                         int64_t end_ns, uint64_t bytes_in, uint64_t bytes_out, int failed,
                         int32_t pid, const char *name, size_t name_len)
    uint32_t nr_events_read(nr_region_t *r, nr_event_t *out, uint32_t max)
    nr_proc_t *nr_proc(nr_region_t *r, uint32_t slot)
    int32_t *nr_ledger(nr_region_t *r, uint32_t slot)
