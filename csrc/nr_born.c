/* nr_born: the region's side of arrays born in the arena (see nr_born.h).
 * The process-local side (numpy's handler, the private remapping, fork)
 * is nr_born_local.c. */
#include "nr_born.h"
#include "nr_internal.h"

#define USED 1ull
static inline nr_block_t *blk(nr_region_t *r, uint64_t off) { return (nr_block_t *)(r->base + off); }

uint64_t nr_born_alloc(nr_region_t *r, uint64_t n, uint64_t *dirty) {
    nr_arena_t *a = &r->hdr->arena;
    uint64_t cap = (a->end - r->hdr->arena_off) / NR_BORN_MAX_SHARE_DIV * NR_BORN_MAX_SHARE_MUL;
    uint64_t off = 0;
    nr_lock(r);
    uint64_t peak = a->peak;                /* past it, nothing was ever written */
    if (a->used + n + 2 * NR_BORN_PAGE <= cap)
        off = nr_arena_alloc_aligned_locked(r, n, NR_BORN_PAGE);
    if (off) W(blk(r, off - NR_BLOCK_HDR)->born, (uint64_t)r->slot + 1);
    nr_unlock(r);
    if (dirty) *dirty = off && peak > off ? peak - off : 0;
    return off;
}

/* Drops one count (the array's: owner; an object's: a ref) on the block. */
static void unhold(nr_region_t *r, uint64_t off, int owner) {
    nr_block_t *b = blk(r, off - NR_BLOCK_HDR);
    uint64_t born = b->born;
    if (!(b->size & USED) || !born) return;          /* never: counts keep it */
    if (owner) born &= ~(uint64_t)0xffffffffu;
    else if (NR_BORN_REFS(born)) born -= NR_BORN_REF;
    if (born) {
        W(b->born, born);
    } else {
        W(b->born, 0);
        nr_arena_free_locked(r, off);
    }
}

void nr_born_release(nr_region_t *r, uint64_t off) {
    nr_lock(r);
    unhold(r, off, 1);
    nr_unlock(r);
}

void nri_born_payload(nr_region_t *r, nr_payload_t *p, int d) {
    uint64_t *blocks = nr_payload_blocks(p);
    if (!blocks) return;
    for (uint32_t i = 0; i < nr_payload_nbufs(p); i++) {
        if (!blocks[i]) continue;
        if (d > 0) WADD(blk(r, blocks[i] - NR_BLOCK_HDR)->born, NR_BORN_REF);
        else unhold(r, blocks[i], 0);
    }
}

void nri_born_reap(nr_region_t *r, uint32_t slot) {
    nr_arena_t *a = &r->hdr->arena;
    /* One walk over the blocks.  Giving one back may free it and merge it
     * into a free block before it (or the free space after it into it),
     * never past the block before it: the walk resumes there. */
    uint64_t off = r->hdr->arena_off, prev = off;
    while (off < a->brk) {
        nr_block_t *b = blk(r, off);
        if ((b->size & USED) && b->born && NR_BORN_OWNER(b->born) == slot + 1) {
            nr_undo_commit(r);               /* one block per step */
            unhold(r, off + NR_BLOCK_HDR, 1);
            off = prev;
            continue;
        }
        prev = off;
        off += b->size & ~USED;
    }
}

uint64_t nr_born_count(nr_region_t *r, uint64_t *bytes) {
    nr_arena_t *a = &r->hdr->arena;
    uint64_t n = 0, total = 0;
    nr_lock(r);
    for (uint64_t off = r->hdr->arena_off; off < a->brk; off += blk(r, off)->size & ~USED) {
        nr_block_t *b = blk(r, off);
        if ((b->size & USED) && b->born) {
            n++;
            total += b->size & ~USED;
        }
    }
    nr_unlock(r);
    if (bytes) *bytes = total;
    return n;
}
