/* nr_spill: moving sealed payloads to files when the store is full, and
 * back on demand.
 *
 * The C layer keeps the state; the language layer does the file I/O.
 *   spill:   nr_spill_pick marks an object NR_SPILL_WRITING (recorded in the
 *            spiller's process slot, so its death undoes the mark) and names
 *            a new file (every spill writes a file of its own, so no file is
 *            ever rewritten or removed while another process may need it);
 *            the spiller writes the payload there, then nr_spill_commit
 *            frees the block and marks it NR_SPILL_DONE (`data` then holds
 *            the file's number), unless a reader pinned it meanwhile.
 *   read:    every reader of a payload pins it first (nr_object_pin).  The
 *            pin and the mark are each set before the other is checked, so
 *            either the spiller sees the pin and keeps the block, or the
 *            reader sees the mark and does not read it.
 *   restore: a reader of a spilled object allocates a block, reads the file
 *            into it, and nr_spill_restore gives it to the object if the
 *            object is still in that file (the first of several racing
 *            restorers wins; the others free theirs and look again).
 * A file is removed, under the lock once the section has committed
 * (nr_unlock), when no object needs it any more: restored, freed, or
 * written by a spiller that died; and the whole directory at shutdown.
 *
 * Pins are not in the ledgers: a process that dies holding a view leaves
 * its object pinned, so it is never spilled, and it is still freed when its
 * counts go. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nr_internal.h"

#define USED 1ull
static inline nr_block_t *blk(nr_region_t *r, uint64_t off) { return (nr_block_t *)(r->base + off); }

int nr_object_pin(nr_region_t *r, uint64_t id, uint64_t *data, uint64_t *size, uint32_t *spill,
                  uint64_t *file) {
    nr_object_t *o = nr_object_lookup(r, id);
    if (!o) return -1;
    int st = (int)LOAD(&o->state);
    *data = 0;
    *size = o->size;
    *spill = 0;
    *file = 0;
    if (st == NR_OBJ_PENDING) return st;
    ADD(&o->pins, 1);
    uint32_t sp = LOAD(&o->spill);
    if (sp != NR_SPILL_NONE) {
        ADD(&o->pins, -1);
        uint64_t f = sp == NR_SPILL_DONE ? LOAD(&o->data) : 0;
        if (LOAD(&o->spill) != sp) f = 0;   /* restored meanwhile: `data` was a block */
        *spill = f || sp != NR_SPILL_DONE ? sp : NR_SPILL_WRITING;   /* (look again) */
        *file = f;
        return st;
    }
    *data = LOAD(&o->data);
    return st;
}

void nr_object_unpin(nr_region_t *r, uint64_t id) {
    nr_object_t *o = objs(r) + (nr_id_index1(id) - 1);   /* the caller's count keeps it */
    ADD(&o->pins, -1);
}

int nr_spill_set_dir(nr_region_t *r, const char *dir) {
    if (strlen(dir) + 40 >= sizeof r->hdr->spill_dir) return -1;
    nr_lock(r);
    strcpy(r->hdr->spill_dir, dir);      /* before any process spills: not logged */
    nr_unlock(r);
    return 0;
}

int nr_spill_path(nr_region_t *r, uint64_t file, char *out, size_t cap) {
    if (!r->hdr->spill_dir[0]) return -1;
    int n = snprintf(out, cap, "%s/%016llx", r->hdr->spill_dir, (unsigned long long)file);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

/* The span of free memory that freeing block `off` would make: the block,
 * its free neighbours, and the fresh memory past brk if it is the top
 * block (a free block never ends at brk). */
static uint64_t span_if_freed(nr_region_t *r, uint64_t off) {
    nr_arena_t *a = &r->hdr->arena;
    nr_block_t *b = blk(r, off);
    uint64_t size = b->size & ~USED, span = size;
    if (b->prev_size && !(blk(r, off - b->prev_size)->size & USED)) span += b->prev_size;
    uint64_t nxt = off + size;
    if (nxt >= a->brk) span += a->end - a->brk;
    else if (!(blk(r, nxt)->size & USED)) span += blk(r, nxt)->size & ~USED;
    return span;
}

/* What spilling o would free: its block's span, or, when its buffers live
 * in born blocks, the largest span of those only it holds (the array is
 * gone, no other object refers to it). */
static uint64_t obj_span(nr_region_t *r, nr_object_t *o) {
    nr_payload_t *p = (nr_payload_t *)(r->base + o->data);
    uint64_t span = span_if_freed(r, o->data - NR_BLOCK_HDR);
    uint64_t *born = nr_payload_blocks(p);
    for (uint32_t i = 0; born && i < nr_payload_nbufs(p); i++) {
        if (!born[i] || blk(r, born[i] - NR_BLOCK_HDR)->born != NR_BORN_REF) continue;
        uint64_t s = span_if_freed(r, born[i] - NR_BLOCK_HDR);
        if (s > span) span = s;
    }
    return span;
}

uint64_t nr_spill_pick(nr_region_t *r, uint64_t need, uint64_t *data, uint64_t *size,
                       uint64_t *file) {
    nr_header_t *h = r->hdr;
    nr_lock(r);
    nr_proc_t *p = nr_proc(r, r->slot);
    uint64_t best = 0, best_span = 0, best_size = 0;
    if (h->spill_dir[0] && !p->spilling) {
        for (uint32_t i = 0; i < h->obj_hwm; i++) {
            nr_object_t *o = objs(r) + i;
            /* Not: pending, spilled, read now, an actor's handles, a value
             * holding refs (its block lists the refs it gives back), or one
             * nothing counts (a zombie, or in a decref's last instant). */
            if ((o->state != NR_OBJ_READY && o->state != NR_OBJ_ERROR) || !o->data ||
                o->spill != NR_SPILL_NONE || LOAD(&o->pins) || o->actor || LOAD(&o->refs) <= 0 ||
                ((nr_payload_t *)(r->base + o->data))->ncontained)
                continue;
            uint64_t span = obj_span(r, o);
            int enough = span >= need + NR_BLOCK_HDR, best_enough = best_span >= need + NR_BLOCK_HDR;
            /* Enough room with the least written out, else the most room. */
            if (!best || (enough && (!best_enough || o->size < best_size)) ||
                (!enough && !best_enough && span > best_span)) {
                best = nr_make_id(o->gen, i + 1);
                best_span = span;
                best_size = o->size;
            }
        }
    }
    if (best) {
        nr_object_t *o = objs(r) + (nr_id_index1(best) - 1);
        LADD64(o->refs, 1);              /* kept while written out: given back at commit */
        nri_ledger_add_locked(r, best, 1);
        W(o->spill, NR_SPILL_WRITING);
        W(h->spill_seq, h->spill_seq + 1);
        W(p->spilling, best);
        W(p->spill_file, h->spill_seq);
        *data = o->data;
        *size = o->size;
        *file = h->spill_seq;
    }
    nr_unlock(r);
    return best;
}

/* Ends this process's spill of `id`: its mark, and the count it took. */
static void spill_end(nr_region_t *r, uint64_t id) {
    nr_proc_t *p = nr_proc(r, r->slot);
    W(p->spilling, 0);
    W(p->spill_file, 0);
    nri_ledger_add_locked(r, id, -1);
    nri_decref(r, id);
}

int nr_spill_commit(nr_region_t *r, uint64_t id) {
    return nr_spill_commit_as(r, id, 0);
}

int nr_spill_commit_as(nr_region_t *r, uint64_t id, uint64_t size) {
    nr_header_t *h = r->hdr;
    nr_lock(r);
    nr_proc_t *p = nr_proc(r, r->slot);
    nr_object_t *o = nr_object_lookup(r, id);    /* our count keeps it */
    int ok = 0;
    if (o && p->spilling == id && o->spill == NR_SPILL_WRITING) {
        if (LOAD(&o->pins) == 0) {
            nri_born_payload(r, (nr_payload_t *)(r->base + o->data), -1);
            nr_arena_free_locked(r, o->data);
            if (size) W(o->size, size);  /* made whole in its file */
            W(o->data, p->spill_file);   /* spilled: the file's number */
            W(o->spill, NR_SPILL_DONE);
            WINC(h->nspilled);
            WADD(h->spilled_bytes, o->size);
            h->spills++;
            ok = 1;
        } else {
            W(o->spill, NR_SPILL_NONE);  /* a reader got in: it stays */
        }
    }
    if (p->spilling == id) spill_end(r, id);
    nr_unlock(r);
    return ok;
}

void nr_spill_abort(nr_region_t *r, uint64_t id) {
    nr_lock(r);
    nr_proc_t *p = nr_proc(r, r->slot);
    nr_object_t *o = nr_object_lookup(r, id);
    if (o && p->spilling == id && o->spill == NR_SPILL_WRITING) W(o->spill, NR_SPILL_NONE);
    if (p->spilling == id) spill_end(r, id);
    nr_unlock(r);
}

/* ---- files no object needs, removed once the section has committed ---- */

static uint64_t *unlinks;
static uint32_t nunlinks, unlinks_cap;

/* Under the lock: spill file `file` is no longer needed by any object.  It
 * is removed after the commit, so a rollback never finds an object whose
 * file is gone; a death before that leaves it for shutdown to remove. */
static void unlink_later(uint64_t file) {
    if (nunlinks == unlinks_cap) {
        uint32_t cap = unlinks_cap ? unlinks_cap * 2 : 16;
        uint64_t *n = realloc(unlinks, cap * sizeof *n);
        if (!n) return;                  /* the file stays until shutdown */
        unlinks = n;
        unlinks_cap = cap;
    }
    unlinks[nunlinks++] = file;
}

int nr_spill_restore(nr_region_t *r, uint64_t id, uint64_t file, uint64_t off) {
    nr_header_t *h = r->hdr;
    nr_lock(r);
    nr_object_t *o = nr_object_lookup(r, id);
    int ok = o && o->spill == NR_SPILL_DONE && o->data == file;
    if (ok) {
        nr_arena_written(r, off);
        W(o->data, off);
        W(o->spill, NR_SPILL_NONE);
        WDEC(h->nspilled);
        W(h->spilled_bytes, h->spilled_bytes - o->size);
        h->restores++;
        unlink_later(file);
    }
    nr_unlock(r);
    return ok;
}

uint64_t nr_put_pinned(nr_region_t *r, uint64_t data, uint64_t size) {
    wakeups_t w = {0};
    nr_lock(r);
    uint64_t id = nri_obj_alloc(r);
    if (id) {
        nr_object_t *o = objs(r) + (nr_id_index1(id) - 1);
        o->pins = 1;                     /* fresh: taken before anyone can see it */
        nr_arena_written_as(r, data, size);
        nri_seal(r, o, data, size, 0, &w);
    }
    nr_unlock(r);
    nri_flush(r, &w);
    return id;
}

/* Under the lock: o (spilled) is being freed. */
void nri_spill_forget(nr_region_t *r, nr_object_t *o) {
    nr_header_t *h = r->hdr;
    WDEC(h->nspilled);
    W(h->spilled_bytes, h->spilled_bytes - o->size);
    unlink_later(o->data);
    W(o->data, 0);
    W(o->spill, NR_SPILL_NONE);
}

/* After the commit, still holding the lock: the files go. */
void nri_spill_unlink_pending(nr_region_t *r) {
    char path[320];
    for (uint32_t i = 0; i < nunlinks; i++)
        if (nr_spill_path(r, unlinks[i], path, sizeof path) == 0) unlink(path);
    nunlinks = 0;
}

int nri_spill_pending(void) { return nunlinks != 0; }

/* Reaping: an object the dead process was writing out stays in memory
 * (its count went with the ledger), and the file it was writing goes. */
void nri_spill_release(nr_region_t *r, uint32_t slot) {
    nr_proc_t *p = nr_proc(r, slot);
    if (!p->spilling) return;
    nr_object_t *o = nr_object_lookup(r, p->spilling);
    if (o && o->spill == NR_SPILL_WRITING) W(o->spill, NR_SPILL_NONE);
    unlink_later(p->spill_file);
    W(p->spilling, 0);
    W(p->spill_file, 0);
}
