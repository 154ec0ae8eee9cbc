# Declarations of csrc/nr_born.h and csrc/nr_born_local.h: numpy arrays
# born in the arena (NEP 49's allocator hook).
from libc.stdint cimport uint8_t, uint64_t
from nanoray._core.region cimport nr_region_t
from nanoray._core.sched cimport nr_payload_t

cdef extern from "nr_born_local.h" nogil:
    ctypedef struct nr_np_allocator_t:
        void *ctx                   # numpy's allocator functions, and their context
    ctypedef struct nr_np_handler_t:
        char name[127]              # "nanoray_born_in_shm"
        uint8_t version             # 1
        nr_np_allocator_t allocator
    ctypedef struct nr_born_stats_t:
        uint64_t born               # allocations served from the arena
        uint64_t born_bytes
        uint64_t fallbacks          # large ones the arena had no room for
        uint64_t handoffs           # blocks handed to the store without a copy
        uint64_t handoff_bytes
        uint64_t frees              # born blocks whose array was freed here
        uint64_t live               # born blocks this process's arrays hold now
        uint64_t live_bytes
        uint64_t remap_failures     # mmap refused (the block is kept)
        uint64_t fork_copies        # blocks copied out of the region before a fork
        uint64_t settled            # lazy hand-offs whose array outlived the task
    nr_np_handler_t nr_born_handler
    int nr_born_init(nr_region_t *r, uint64_t threshold, const nr_np_allocator_t *prev)
    void nr_born_pause(int paused)
    int nr_born_thread_ready()
    void nr_born_thread_set()
    int nr_born_find(const char *ptr, uint64_t len, uint64_t *block)
    int nr_born_handoff(uint64_t block, int lazy)
    int nr_born_settle()
    int nr_born_hidden(uint64_t off, uint64_t len)
    void nr_born_before_fork()
    void nr_born_after_fork_child()
    void nr_born_get_stats(nr_born_stats_t *s)

cdef extern from "nr_born.h" nogil:
    uint64_t nr_born_count(nr_region_t *r, uint64_t *bytes)

cdef extern from "nr_sched.h" nogil:
    enum:
        NR_PAYLOAD_EXTERN
    uint64_t *nr_payload_blocks(nr_payload_t *p)
    uint64_t nr_payload_nbufs(const nr_payload_t *p)
