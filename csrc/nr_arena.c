#include "nr_arena.h"
#include "nr_undo.h"
#include "nr_prefault.h"

#define USED 1ull
static inline nr_block_t *blk(nr_region_t *r, uint64_t off) { return (nr_block_t *)(r->base + off); }
static inline uint64_t bsize(nr_block_t *b) { return b->size & ~USED; }
static inline int bin_of(uint64_t size) { return 63 - __builtin_clzll(size / NR_BLOCK_HDR); }

/* The size class of a small payload of n bytes: blocks of 192, 256 or 512
 * bytes (two cache entries each).  192, not 128: a plain task's spec
 * (about 100 bytes) and a small result then share a class, so the specs a
 * worker frees are its next results, and the results the driver frees its
 * next specs, with no block split or refilled under the lock. */
static inline int small_class(uint64_t n) {
    return n + NR_BLOCK_HDR <= 192 ? 0 : n + NR_BLOCK_HDR <= 256 ? 1 : 2;
}
static inline uint64_t class_size(int c) { return c == 0 ? 192 : c == 1 ? 256 : 512; }
static inline int class_of_size(uint64_t size) {
    return size == 192 ? 0 : size == 256 ? 1 : size == 512 ? 2 : -1;
}

static void unlink_free(nr_region_t *r, uint64_t off) {
    nr_arena_t *a = &r->hdr->arena;
    nr_block_t *b = blk(r, off);
    int bin = bin_of(bsize(b));
    if (b->prev_free) W(blk(r, b->prev_free)->next_free, b->next_free);
    else W(a->bins[bin], b->next_free);
    if (b->next_free) W(blk(r, b->next_free)->prev_free, b->prev_free);
    if (!a->bins[bin]) W(a->bitmap, a->bitmap & ~(1ull << bin));
}

static void push_free(nr_region_t *r, uint64_t off) {
    nr_arena_t *a = &r->hdr->arena;
    nr_block_t *b = blk(r, off);
    int bin = bin_of(bsize(b));
    W(b->size, b->size & ~USED);
    W(b->prev_free, 0);
    W(b->next_free, a->bins[bin]);
    if (b->next_free) W(blk(r, b->next_free)->prev_free, off);
    W(a->bins[bin], off);
    W(a->bitmap, a->bitmap | (1ull << bin));
}

/* Sets the prev_size of the block after `off`.  There always is one: `off`
 * is a free block or a split-off tail of one, and no free block ends at brk
 * (freeing the top block lowers brk instead). */
static void fix_next(nr_region_t *r, uint64_t off) {
    nr_arena_t *a = &r->hdr->arena;
    uint64_t nxt = off + bsize(blk(r, off));
    if (nxt < a->brk) W(blk(r, nxt)->prev_size, bsize(blk(r, off)));
}

/* Cuts `need` bytes off the front of free-or-fresh block `off` (already
 * unlinked), returning the tail to the free lists. */
static void split(nr_region_t *r, uint64_t off, uint64_t need) {
    nr_block_t *b = blk(r, off);
    uint64_t size = bsize(b);
    if (size - need < NR_MIN_BLOCK) return;
    uint64_t rest = off + need;
    nr_block_t *t = blk(r, rest);
    W(t->size, size - need);
    W(t->prev_size, need);
    W(b->size, need | (b->size & USED));
    fix_next(r, rest);
    push_free(r, rest);
}

uint64_t nr_arena_alloc_locked(nr_region_t *r, uint64_t n) {
    nr_arena_t *a = &r->hdr->arena;
    if (n > a->end) return 0;
    uint64_t need = (n + NR_BLOCK_HDR + NR_ALIGN - 1) & ~(uint64_t)(NR_ALIGN - 1);
    if (need < NR_MIN_BLOCK) need = NR_MIN_BLOCK;
    int bin = bin_of(need);
    uint64_t off = 0;
    /* Same bin: bounded first fit, most recently freed first. */
    if (a->bitmap & (1ull << bin)) {
        uint64_t cur = a->bins[bin];
        for (int i = 0; cur && i < 32; i++, cur = blk(r, cur)->next_free)
            if (bsize(blk(r, cur)) >= need) { off = cur; break; }
    }
    /* Any block of a higher bin is large enough. */
    if (!off && bin + 1 < NR_NBINS) {
        uint64_t m = a->bitmap & (~0ull << (bin + 1));
        if (m) off = a->bins[__builtin_ctzll(m)];
    }
    /* Last resort before fresh memory fails: every block of the same bin. */
    if (!off && a->brk + need > a->end && (a->bitmap & (1ull << bin))) {
        for (uint64_t cur = a->bins[bin]; cur; cur = blk(r, cur)->next_free)
            if (bsize(blk(r, cur)) >= need) { off = cur; break; }
    }
    if (off) {
        unlink_free(r, off);
        W(blk(r, off)->size, blk(r, off)->size | USED);
        split(r, off, need);
    } else {
        if (a->brk + need > a->end) return 0;
        off = a->brk;
        nr_block_t *b = blk(r, off);
        W(b->size, need | USED);
        W(b->prev_size, a->last ? bsize(blk(r, a->last)) : 0);
        WADD(a->brk, need);
        W(a->last, off);
        if (a->brk > a->peak) a->peak = a->brk;   /* a high-water mark: not undone */
    }
    nr_block_t *b = blk(r, off);
    W(b->req, n);
    if (b->born) W(b->born, 0);       /* left from a past life as a born block */
    WADD(a->used, bsize(b));
    WINC(a->nallocs);
    return off + NR_BLOCK_HDR;
}

void nr_arena_free_locked(nr_region_t *r, uint64_t payload_off) {
    nr_arena_t *a = &r->hdr->arena;
    uint64_t off = payload_off - NR_BLOCK_HDR;
    nr_block_t *b = blk(r, off);
    W(a->used, a->used - bsize(b));
    WDEC(a->nallocs);
    W(b->size, b->size & ~USED);
    /* Merge with the next block. */
    uint64_t nxt = off + bsize(b);
    if (nxt < a->brk && !(blk(r, nxt)->size & USED)) {
        unlink_free(r, nxt);
        WADD(b->size, bsize(blk(r, nxt)));
    }
    /* Merge into the previous block. */
    if (b->prev_size) {
        uint64_t prv = off - b->prev_size;
        if (!(blk(r, prv)->size & USED)) {
            unlink_free(r, prv);
            WADD(blk(r, prv)->size, bsize(b));
            off = prv;
        }
    }
    if (off + bsize(blk(r, off)) == a->brk) {
        /* The top block goes back below brk, so a later, larger request can
         * grow it in place (its pages stay warm; brk only moves down). */
        W(a->brk, off);
        W(a->last, blk(r, off)->prev_size ? off - blk(r, off)->prev_size : 0);
        return;
    }
    fix_next(r, off);
    push_free(r, off);
}

/* Splits the used block at `off` (header offset) at `off + first`: two used
 * blocks; returns the second's header offset. */
static uint64_t split_used(nr_region_t *r, uint64_t off, uint64_t first) {
    nr_arena_t *a = &r->hdr->arena;
    nr_block_t *b = blk(r, off);
    uint64_t size = bsize(b), rest = off + first;
    nr_block_t *t = blk(r, rest);
    W(t->size, (size - first) | USED);
    W(t->prev_size, first);
    W(t->req, 0);
    if (t->born) W(t->born, 0);
    W(b->size, first | USED);
    uint64_t nxt = rest + (size - first);
    if (nxt < a->brk) W(blk(r, nxt)->prev_size, size - first);
    if (a->last == off) W(a->last, rest);
    WINC(a->nallocs);
    return rest;
}

void nr_arena_written_as(nr_region_t *r, uint64_t payload_off, uint64_t n) {
    nr_arena_written(r, payload_off);
    if (!payload_off || n > NR_SMALL_PAYLOAD) return;   /* (0: sealed with no payload) */
    uint64_t off = payload_off - NR_BLOCK_HDR;
    nr_block_t *b = blk(r, off);
    /* A larger class's block keeps its payload's class size where the rest
     * makes a block (512: 192 + 320, or 256 + 256); a 256 holding a
     * payload of the 192 class stays whole. */
    uint64_t size = bsize(b), want = class_size(small_class(n));
    if (size <= want || size - want < NR_MIN_BLOCK || class_of_size(size) < 0 || b->born)
        return;
    nr_arena_free_keep_locked(r, split_used(r, off, want) + NR_BLOCK_HDR);
}

/* Where in free block `off` an aligned payload of len bytes would start
 * (its leading fragment none, or a block of its own), 0 if it does not fit. */
static uint64_t aligned_fit(nr_region_t *r, uint64_t off, uint64_t len, uint64_t align) {
    uint64_t p = (off + NR_BLOCK_HDR + align - 1) & ~(align - 1);
    if (p != off + NR_BLOCK_HDR && p - NR_BLOCK_HDR - off < NR_MIN_BLOCK) p += align;
    return p + len <= off + bsize(blk(r, off)) ? p : 0;
}

uint64_t nr_arena_alloc_aligned_locked(nr_region_t *r, uint64_t n, uint64_t align) {
    nr_arena_t *a = &r->hdr->arena;
    uint64_t len = (n + align - 1) & ~(align - 1);
    if (len < n || len > a->end) return 0;
    /* A free block it fits in, aligned: a freed born block fits exactly
     * (its pages are warm).  Bounded first fit from its bin up. */
    uint64_t p = 0, off = 0;
    for (int bin = bin_of(len + NR_BLOCK_HDR); bin < NR_NBINS && !p; bin++) {
        if (!(a->bitmap & (1ull << bin))) continue;
        uint64_t cur = a->bins[bin];
        for (int i = 0; cur && i < 32 && !p; i++, cur = blk(r, cur)->next_free)
            if ((p = aligned_fit(r, cur, len, align))) off = cur;
    }
    if (p) {
        nr_block_t *b = blk(r, off);
        unlink_free(r, off);
        W(b->size, b->size | USED);
        if (b->born) W(b->born, 0);
        WADD(a->used, bsize(b));
        WINC(a->nallocs);
    } else {
        /* Room for the block, its alignment, and a leading fragment big
         * enough to be a block of its own; the slack goes back at once. */
        p = nr_arena_alloc_locked(r, len + align + NR_MIN_BLOCK);
        if (!p) return 0;
        off = p - NR_BLOCK_HDR;
        p = aligned_fit(r, off, len, align);
    }
    if (p != off + NR_BLOCK_HDR) {        /* the leading fragment goes back */
        uint64_t head = off;
        off = split_used(r, head, p - NR_BLOCK_HDR - head);
        nr_arena_free_locked(r, head + NR_BLOCK_HDR);
    }
    uint64_t need = NR_BLOCK_HDR + len;
    if (bsize(blk(r, off)) - need >= NR_MIN_BLOCK)   /* and the tail */
        nr_arena_free_locked(r, split_used(r, off, need) + NR_BLOCK_HDR);
    W(blk(r, off)->req, n);
    return off + NR_BLOCK_HDR;
}

/* The caller's blocks in flight are recorded in its process slot, in the
 * same critical section as the allocation, until a seal, a put or a submit
 * takes them (nr_arena_written): a process that dies while writing one
 * leaks nothing.  Two records per process; a third block in flight at
 * once (threads) goes unrecorded. */
uint64_t nr_arena_alloc(nr_region_t *r, uint64_t n) {
    nr_lock(r);
    uint64_t off = nr_arena_alloc_locked(r, n);
    if (off) {
        nr_proc_t *p = nr_proc(r, r->slot);
        if (!p->writing[0]) W(p->writing[0], off);
        else if (!p->writing[1]) W(p->writing[1], off);
    }
    nr_unlock(r);
    if (off) nr_prefault_kick(r);       /* fresh memory used: keep the window ahead */
    return off;
}

static void uncache(nr_region_t *r, nr_proc_t *p, int i, uint64_t off);

/* Takes a cached block of class c or larger (marked in flight), 0 if none:
 * blocks freed into larger entries (nr_arena_free_keep_locked) serve
 * smaller payloads too, so a worker's returns reuse the specs it frees, and
 * the driver's specs the returns it frees (cut to size when they become
 * objects: nr_arena_written_as). */
static uint64_t take_cached(nr_proc_t *p, int c, int *entry) {
    for (int i = 2 * c; i < NR_NCACHE; i++) {
        uint64_t v = __atomic_load_n(&p->cache[i], __ATOMIC_SEQ_CST);
        if (v && !(v & 1) &&
            __atomic_compare_exchange_n(&p->cache[i], &v, v | 1, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST)) {
            *entry = i;
            return v;
        }
    }
    return 0;
}

uint64_t nr_arena_alloc_small_locked(nr_region_t *r, uint64_t n) {
    if (n > NR_SMALL_PAYLOAD || r->borrowed) return nr_arena_alloc_locked(r, n);
    int c = small_class(n);
    nr_proc_t *p = nr_proc(r, r->slot);
    nr_arena_t *a = &r->hdr->arena;
    /* Taken as take_cached does (a thread of this process may take entries
     * without the lock), but cleared at once, the caller's already (no
     * write in flight), and logged before, so a death in this section
     * gives the entry back exactly. */
    for (int i = 2 * c; i < NR_NCACHE; i++) {
        uint64_t v = __atomic_load_n(&p->cache[i], __ATOMIC_SEQ_CST);
        if (!v || (v & 1)) continue;
        NR_CRASH_SITE();
        nr_undo_push(r, &p->cache[i], NR_UNDO_U64, v);
        NR_CRASH_SITE();
        uint64_t want = v;
        if (!__atomic_compare_exchange_n(&p->cache[i], &want, 0, 0, __ATOMIC_SEQ_CST,
                                         __ATOMIC_SEQ_CST))
            continue;
        WADD(a->cached, -(nr_arena_usable(r, v) + NR_BLOCK_HDR));
        WDEC(a->ncached);
        return v;
    }
    return nr_arena_alloc_locked(r, class_size(c) - NR_BLOCK_HDR);   /* a size it can keep */
}

uint64_t nr_arena_alloc_small(nr_region_t *r, uint64_t n) {
    if (n > NR_SMALL_PAYLOAD || r->borrowed) return nr_arena_alloc(r, n);
    /* A payload takes at most about twice its size in its own class (the
     * arena rounds to 64); a larger entry's block is cut to size later. */
    int c = small_class(n), i;
    uint64_t payload = class_size(c) - NR_BLOCK_HDR;
    nr_proc_t *p = nr_proc(r, r->slot);
    for (int round = 0; round < 2; round++) {
        uint64_t v = take_cached(p, c, &i);
        if (v) return v;
        if (round) break;
        nr_arena_t *a = &r->hdr->arena;
        nr_lock(r);                      /* refill the class's empty entries at once */
        for (int k = 2 * c; k < 2 * c + 2; k++) {
            if (p->cache[k]) continue;
            uint64_t off = nr_arena_alloc_locked(r, payload);
            if (!off) break;
            W(p->cache[k], off);
            WADD(a->cached, nr_arena_usable(r, off) + NR_BLOCK_HDR);
            WINC(a->ncached);
        }
        nr_unlock(r);
    }
    return nr_arena_alloc(r, n);         /* store full, or every entry is being written */
}

void nr_arena_free_keep_locked(nr_region_t *r, uint64_t payload_off) {
    nr_block_t *b = blk(r, payload_off - NR_BLOCK_HDR);
    uint64_t size = bsize(b);
    int c = class_of_size(size);
    nr_proc_t *p = nr_proc(r, r->slot);
    /* (not into the slot of a process gone: nothing would take it back) */
    if (c >= 0 && !b->born && !r->borrowed && p->state != NR_PROC_FREE &&
        p->state != NR_PROC_EXITED) {
        nr_arena_t *a = &r->hdr->arena;
        for (int i = 2 * c; i < 2 * c + 2; i++) {
            if (p->cache[i]) continue;
            W(p->cache[i], payload_off);
            WADD(a->cached, size);
            WINC(a->ncached);
            return;
        }
    }
    nr_arena_free_locked(r, payload_off);
}

/* Under the lock: a cache entry no longer holds the block at off. */
static void uncache(nr_region_t *r, nr_proc_t *p, int i, uint64_t off) {
    nr_arena_t *a = &r->hdr->arena;
    W(p->cache[i], 0);
    WADD(a->cached, -(nr_arena_usable(r, off) + NR_BLOCK_HDR));
    WDEC(a->ncached);
}

void nr_arena_written(nr_region_t *r, uint64_t off) {
    nr_proc_t *p = nr_proc(r, r->slot);
    if (p->writing[0] == off) W(p->writing[0], 0);
    else if (p->writing[1] == off) W(p->writing[1], 0);
    else
        for (int i = 0; i < NR_NCACHE; i++)
            if (p->cache[i] == (off | 1)) { uncache(r, p, i, off); break; }
}

void nr_arena_free(nr_region_t *r, uint64_t payload_off) {
    nr_lock(r);
    nr_arena_written(r, payload_off);
    nr_arena_free_locked(r, payload_off);
    nr_unlock(r);
}

void nr_arena_release_writing(nr_region_t *r, uint32_t slot) {
    nr_proc_t *p = nr_proc(r, slot);
    for (int i = 0; i < 2; i++) {
        if (p->writing[i]) nr_arena_free_locked(r, p->writing[i]);
        if (p->writing[i]) W(p->writing[i], 0);
    }
    for (int i = 0; i < NR_NCACHE; i++) {
        uint64_t off = p->cache[i] & ~(uint64_t)1;
        if (!off) continue;
        uncache(r, p, i, off);
        nr_arena_free_locked(r, off);
    }
}

uint64_t nr_arena_usable(nr_region_t *r, uint64_t payload_off) {
    return bsize(blk(r, payload_off - NR_BLOCK_HDR)) - NR_BLOCK_HDR;
}

uint64_t nr_arena_largest_free(nr_region_t *r) {
    nr_arena_t *a = &r->hdr->arena;
    nr_lock(r);
    uint64_t best = a->end - a->brk;
    for (int bin = 0; bin < NR_NBINS; bin++)
        for (uint64_t cur = a->bins[bin]; cur; cur = blk(r, cur)->next_free)
            if (bsize(blk(r, cur)) > best) best = bsize(blk(r, cur));
    nr_unlock(r);
    return best > NR_BLOCK_HDR ? best - NR_BLOCK_HDR : 0;
}

int nr_arena_check(nr_region_t *r) {
    nr_arena_t *a = &r->hdr->arena;
    uint64_t off = r->hdr->arena_off, prev = 0, used = 0, nfree_walk = 0, n = 0;
    int prev_free = 0;
    while (off < a->brk) {
        nr_block_t *b = blk(r, off);
        uint64_t s = bsize(b);
        if (s < NR_MIN_BLOCK || s % NR_ALIGN) return -1;
        if (b->prev_size != prev) return -2;
        int is_free = !(b->size & USED);
        if (is_free && prev_free) return -3;          /* uncoalesced */
        if (is_free) nfree_walk++; else { used += s; n++; }
        prev_free = is_free; prev = s; off += s;
    }
    if (off != a->brk) return -4;
    if (used != a->used || n != a->nallocs) return -5;
    if (a->last && a->last + bsize(blk(r, a->last)) != a->brk) return -6;
    uint64_t nfree_lists = 0;
    for (int bin = 0; bin < NR_NBINS; bin++) {
        uint64_t cur = a->bins[bin], p = 0;
        if (!!cur != !!(a->bitmap & (1ull << bin))) return -7;
        for (; cur; p = cur, cur = blk(r, cur)->next_free) {
            nr_block_t *b = blk(r, cur);
            if (b->size & USED) return -8;
            if (bin_of(bsize(b)) != bin) return -9;
            if (b->prev_free != p) return -10;
            nfree_lists++;
        }
    }
    if (nfree_lists != nfree_walk) return -11;
    return 0;
}
