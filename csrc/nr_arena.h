/* nr_arena: the allocator for object payloads and task specs.
 *
 * Boundary-tag blocks with segregated free lists (one per power of two of
 * the size), all links as region offsets.  Two choices matter for speed
 * here, where first-touch page faults make fresh memory 30-50x slower to
 * write than reused memory:
 *   - memory past `brk` (never touched) is used only when no free block
 *     fits, so a freed block is reused while still warm;
 *   - free lists are LIFO, so the most recently freed block comes first.
 * Freed blocks coalesce with free neighbours; a free block at the top
 * lowers brk so a larger request can grow it in place.  Memory once
 * touched stays with the region, bounded by the peak live size.
 * Callers hold the region lock (the _locked functions) or use the wrappers.
 */
#ifndef NR_ARENA_H
#define NR_ARENA_H

#include "nr_region.h"

#define NR_BLOCK_HDR 64u
#define NR_MIN_BLOCK 128u

typedef struct {
    uint64_t size;       /* block bytes including this header; bit 0 = in use */
    uint64_t prev_size;  /* bytes of the physically previous block, 0 if first */
    uint64_t next_free;  /* free-list links, valid while free */
    uint64_t prev_free;
    uint64_t req;        /* bytes the caller asked for */
    uint64_t born;       /* blocks numpy arrays were born in (nr_born.h), 0 otherwise:
                          * low 32 bits, slot + 1 of the process whose live array holds
                          * it (0: the array is gone); high 32, payloads that refer to it */
    uint64_t _pad[2];
} nr_block_t;

/* Returns the offset of a NR_ALIGN-aligned payload of `n` bytes, 0 if full. */
uint64_t nr_arena_alloc_locked(nr_region_t *r, uint64_t n);
void nr_arena_free_locked(nr_region_t *r, uint64_t payload_off);
/* The same, but a block of a size the small cache holds goes to the calling
 * process's cache when that entry is empty: its next small payload or spec
 * takes it without the lock (a task's spec, freed by the worker that ran
 * it, becomes that worker's next return; a result, freed by the driver,
 * its next spec).  Not in a borrowed slot (r->borrowed, the zygote's):
 * the slot's owner could take the block before the section commits, and
 * a death of the borrower inside it would undo the keep under its feet. */
void nr_arena_free_keep_locked(nr_region_t *r, uint64_t payload_off);
/* As nr_arena_alloc_locked, with the payload aligned to `align` (a power
 * of two, a multiple of NR_ALIGN) and rounded up to a multiple of it: the
 * pages of [payload, payload + round_up(n)) belong to this block alone. */
uint64_t nr_arena_alloc_aligned_locked(nr_region_t *r, uint64_t n, uint64_t align);
uint64_t nr_arena_alloc(nr_region_t *r, uint64_t n);
/* nr_arena_alloc, but up to NR_SMALL_PAYLOAD bytes come from this process's
 * cache of small blocks (two each of 192, 256 and 512 bytes; its size
 * class's, else a larger one's), with no lock (a size class's two are
 * refilled under one acquisition): a task's spec and
 * a small result then cost no lock of their own.  Freed, or made an
 * object's or a task's, as any block. */
uint64_t nr_arena_alloc_small(nr_region_t *r, uint64_t n);
/* Under the lock: the same cache's block, handed over at once (not in
 * flight: nothing to mark written), else a block of its size class from
 * the arena, so that whoever frees it can keep it. */
uint64_t nr_arena_alloc_small_locked(nr_region_t *r, uint64_t n);
void nr_arena_free(nr_region_t *r, uint64_t payload_off);
uint64_t nr_arena_usable(nr_region_t *r, uint64_t payload_off);
/* Under the lock: the block at off is now owned (sealed, put, submitted). */
void nr_arena_written(nr_region_t *r, uint64_t off);
/* The same for a block becoming an object's payload of n bytes: one of a
 * larger size class than n needs (a cache's larger entry: a freed spec
 * reused) keeps only its class's size where the rest makes a block, and
 * the rest goes back (to the cache, as freed blocks do, or the free
 * lists), so an object of a few bytes holds 192 of the store (256 when
 * it reused a 256-byte block), not 512. */
void nr_arena_written_as(nr_region_t *r, uint64_t off, uint64_t n);
/* Under the lock: frees the blocks a dead process was still writing. */
void nr_arena_release_writing(nr_region_t *r, uint32_t slot);

/* Walks every block and free list; returns 0 when consistent, else a
 * negative code naming the first broken invariant (for tests). */
int nr_arena_check(nr_region_t *r);
/* Largest block that an allocation could get right now (takes the lock). */
uint64_t nr_arena_largest_free(nr_region_t *r);

#endif
