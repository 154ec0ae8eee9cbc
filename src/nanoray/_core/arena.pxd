# Declarations of csrc/nr_arena.h: the allocator for payloads and specs.
from libc.stdint cimport uint64_t
from nanoray._core.region cimport nr_region_t

cdef extern from "nr_arena.h" nogil:
    uint64_t nr_arena_alloc(nr_region_t *r, uint64_t n)
    uint64_t nr_arena_alloc_small(nr_region_t *r, uint64_t n)
    void nr_arena_free(nr_region_t *r, uint64_t payload_off)
    uint64_t nr_arena_usable(nr_region_t *r, uint64_t payload_off)
    int nr_arena_check(nr_region_t *r)
    uint64_t nr_arena_largest_free(nr_region_t *r)

cdef extern from "nr_prefault.h" nogil:
    int nr_prefault_start(nr_region_t *r, uint64_t window)
    void nr_prefault_stop()
    int nr_prefault_running(const char *base)
    void nr_prefault_touch(nr_region_t *r, const char *p, uint64_t n)
