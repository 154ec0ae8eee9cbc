/* nr_born: numpy arrays born in the arena (NEP 49), so that returning or
 * putting one stores it without copying a byte.
 *
 * A worker installs numpy's allocator hook (PyDataMem_SetHandler, set up
 * in rt/born.pyx); allocations of at least `threshold` bytes get a block
 * of the arena whose payload is page-aligned and a whole number of pages
 * (nr_arena_alloc_aligned_locked), so that its pages belong to it alone.
 * Smaller ones, and every one when the store is half full, go to the
 * handler that was there before (the store never spills to make room for
 * a plain allocation, and never fails one).
 *
 *   malloc ──► born block, held by this process's live array ─┐
 *                 (block->born low 32 bits: slot + 1)          │ put / return
 *                                                              ▼
 *   payload ──{blocks[i] = born block}──► count in block->born's high 32 bits
 *   (the object's own block:             (taken when the object is sealed,
 *    pickle stream, buffer table)         given back when it is freed)
 *
 * The design: the block is shared by the array and every object that
 * refers to it, and freed when both are done (the array: its free();
 * the objects: their last count).  When the block is handed to the store,
 * the owner maps its pages again at the same address, MAP_PRIVATE (copy
 * on write), so the array still reads the same bytes but a later write to
 * it stays in this process and never reaches the stored object; when the
 * array is freed the range is mapped MAP_SHARED again before the block is
 * given back.  Only the first hand-off of a block is zero-copy (after it,
 * the array's bytes may differ from the block's: a later put copies).
 * The owner itself reads objects that refer to a block it maps privately
 * through a second, shared mapping of the range (rt/born.pyx).
 *
 * Crash consistency: the block is tied to its process (born's low bits)
 * in the same critical section that allocates it, and the objects' counts
 * are taken in the section that seals them, so a process killed at any
 * instant leaves every born block either held by a live array of a
 * process the reaper will see (nri_born_reap gives it back), or counted
 * by sealed objects (freed with the last of them).  Nothing is written
 * outside the lock but the arrays' own bytes.
 */
#ifndef NR_BORN_H
#define NR_BORN_H

#include "nr_sched.h"

#define NR_BORN_PAGE 4096u
/* Arrays are born in the arena only while it is less than half full
 * (blocks of every kind counted); past that they go to the previous
 * allocator.  Live arrays a worker keeps (model weights, datasets) count
 * in the store's use and cannot be spilled, so at worst they leave half of
 * it for objects: a put still fails if objects need more than that. */
#define NR_BORN_MAX_SHARE_MUL 1u
#define NR_BORN_MAX_SHARE_DIV 2u
#define NR_BORN_OWNER(born) ((uint32_t)((born) & 0xffffffffu))
#define NR_BORN_REFS(born) ((uint32_t)((born) >> 32))
#define NR_BORN_REF 0x100000000ull

/* Takes the lock: a born block of at least n bytes (page-aligned, a whole
 * number of pages) held by this process; its payload offset, 0 when the
 * arena has no room.  *dirty: how many bytes from its start may hold old
 * data (past them, pages never touched: zero). */
uint64_t nr_born_alloc(nr_region_t *r, uint64_t n, uint64_t *dirty);
/* Takes the lock: the array of the born block at payload offset off is
 * gone; the block is freed unless objects still refer to it. */
void nr_born_release(nr_region_t *r, uint64_t off);
/* Under the lock: payload p's references to born blocks are taken
 * (d = 1, when its object is sealed) or given back (d = -1, freed). */
void nri_born_payload(nr_region_t *r, nr_payload_t *p, int d);
/* Under the lock, reaping `slot`: the blocks its live arrays held are
 * given back (freed unless objects refer to them), one committed step each. */
void nri_born_reap(nr_region_t *r, uint32_t slot);
/* Test hook: born blocks (in use) and their bytes, walking the arena
 * (takes the lock). */
uint64_t nr_born_count(nr_region_t *r, uint64_t *bytes);

#endif
