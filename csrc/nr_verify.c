/* nr_verify: checking the shared structures against each other, a digest of
 * their meaning (for tests of rollback), and the crash points of test builds.
 *
 * nr_region_verify runs after every repair (nr_lock, when a holder died) and
 * in tests; it allocates scratch memory in proportion to the tables, so it is
 * never on a fast path. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nr_internal.h"

#define USED 1ull
static inline nr_block_t *blk(nr_region_t *r, uint64_t off) { return (nr_block_t *)(r->base + off); }
static inline nr_name_t *names(nr_region_t *r) { return (nr_name_t *)(r->base + r->hdr->names_off); }

/* Used blocks in address order, with how many owners claim each. */
typedef struct { uint64_t *off; uint32_t *owners; uint32_t *brefs; uint64_t n; } blocks_t;

static int64_t block_find(blocks_t *b, uint64_t payload) {
    uint64_t off = payload - NR_BLOCK_HDR;
    int64_t lo = 0, hi = (int64_t)b->n - 1;
    while (lo <= hi) {
        int64_t mid = (lo + hi) / 2;
        if (b->off[mid] == off) return mid;
        if (b->off[mid] < off) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
}

/* Claims the block of `payload` for one owner; 0, or -1 if no such block. */
static int claim(blocks_t *b, uint64_t payload) {
    int64_t i = block_find(b, payload);
    if (i < 0) return -1;
    b->owners[i]++;
    return 0;
}

#define FAIL(c) do { rc = (c); goto out; } while (0)

int nr_region_verify(nr_region_t *r, nr_verify_t *out) {
    nr_header_t *h = r->hdr;
    int rc = nr_arena_check(r);
    blocks_t b = {0};
    uint32_t *tcount = NULL, *tdeps = NULL, *held = NULL;
    int64_t *sum = NULL;
    if (out) memset(out, 0, sizeof *out);
    if (rc) return -100 + rc;
    if (h->obj_hwm > h->max_objects || h->task_hwm > h->max_tasks || h->dep_hwm > h->max_deps)
        return -200;

    /* The arena's used blocks. */
    uint64_t nblocks = h->arena.nallocs;
    b.off = malloc((nblocks + 1) * sizeof *b.off);
    b.owners = calloc(nblocks + 1, sizeof *b.owners);
    b.brefs = calloc(nblocks + 1, sizeof *b.brefs);    /* payloads' refs to born blocks */
    tcount = calloc((size_t)h->task_hwm + 2, sizeof *tcount);   /* queue memberships */
    tdeps = calloc((size_t)h->task_hwm + 2, sizeof *tdeps);     /* dep nodes per task */
    if (!b.off || !b.owners || !b.brefs || !tcount || !tdeps) FAIL(-1);
    for (uint64_t off = h->arena_off; off < h->arena.brk; off += blk(r, off)->size & ~USED)
        if (blk(r, off)->size & USED) b.off[b.n++] = off;

    /* Objects. */
    uint32_t live = 0, nspilled = 0;
    for (uint32_t i = 0; i < h->obj_hwm; i++) {
        nr_object_t *o = objs(r) + i;
        if (o->state == NR_OBJ_FREE) continue;
        if (o->state > NR_OBJ_ERROR) FAIL(-201);
        live++;
        if (o->refs < 0) FAIL(-202);
        if (o->data && o->spill != NR_SPILL_DONE && claim(&b, o->data)) FAIL(-203);
        uint64_t *born = o->data && o->spill != NR_SPILL_DONE ?
            nr_payload_blocks((nr_payload_t *)(r->base + o->data)) : NULL;
        if (born) {
            nr_payload_t *pl = (nr_payload_t *)(r->base + o->data);
            for (uint32_t k = 0; k < nr_payload_nbufs(pl); k++) {
                if (!born[k]) continue;
                int64_t bi = block_find(&b, born[k]);
                if (bi < 0) FAIL(-241);
                b.brefs[bi]++;
            }
        }
        if (o->spill == NR_SPILL_DONE) {
            if (!o->data || o->state == NR_OBJ_PENDING) FAIL(-230);
            nspilled++;
        } else if (o->spill == NR_SPILL_WRITING) {
            int owner = 0;
            for (uint32_t s = 0; s < h->max_procs && !owner; s++)
                owner = nr_proc(r, s)->spilling == nr_make_id(o->gen, i + 1);
            if (!o->data || !owner) FAIL(-231);
        } else if (o->spill != NR_SPILL_NONE) {
            FAIL(-232);
        }
        if (o->state != NR_OBJ_PENDING && o->dep_head) FAIL(-204);
        uint32_t ndeps = 0;
        for (uint32_t d = o->dep_head; d; d = deps(r)[d - 1].next) {
            if (d > h->dep_hwm || ++ndeps > h->dep_hwm) FAIL(-205);
            uint32_t t = deps(r)[d - 1].dep_task;
            if (!t || t > h->task_hwm || nr_task(r, t)->state != NR_TASK_WAITING) FAIL(-206);
            tdeps[t]++;
        }
        if (o->refs == 0 && o->state != NR_OBJ_PENDING && out) out->zero_count_objects++;
    }
    if (live != h->nobjects) FAIL(-207);
    if (nspilled != h->nspilled) FAIL(-233);
    uint32_t n = 0;
    for (uint32_t f = h->obj_free; f; f = objs(r)[f - 1].next_free) {
        if (f > h->obj_hwm || ++n > h->obj_hwm || objs(r)[f - 1].state != NR_OBJ_FREE) FAIL(-208);
    }
    if (n != h->obj_hwm - h->nobjects) FAIL(-209);
    n = 0;
    for (uint32_t z = h->zombie_head; z; z = objs(r)[z - 1].next_free) {
        nr_object_t *o = objs(r) + (z - 1);
        if (z > h->obj_hwm || ++n > h->obj_hwm) FAIL(-210);
        if (o->refs != 0 || o->state == NR_OBJ_FREE || o->state == NR_OBJ_PENDING) FAIL(-211);
        if (out) out->zero_count_objects--;
    }

    /* Dependency nodes. */
    uint32_t nd = 0;
    for (uint32_t t = 1; t <= h->task_hwm; t++) nd += tdeps[t];
    if (nd != h->ndeps_live) FAIL(-220);
    n = 0;
    for (uint32_t d = h->dep_free; d; d = deps(r)[d - 1].next)
        if (d > h->dep_hwm || ++n > h->dep_hwm) FAIL(-221);
    if (n != h->dep_hwm - h->ndeps_live) FAIL(-222);

    /* Tasks. */
    live = 0;
    for (uint32_t t = 1; t <= h->task_hwm; t++) {
        nr_task_t *task = nr_task(r, t);
        if (task->state == NR_TASK_FREE) continue;
        if (task->state > NR_TASK_RUNNING) FAIL(-301);
        live++;
        if (!task->spec || claim(&b, task->spec)) FAIL(-302);
        if (task->state == NR_TASK_WAITING && task->deps_left != tdeps[t]) FAIL(-303);
        if (task->state != NR_TASK_WAITING && tdeps[t]) FAIL(-304);
    }
    if (live != h->ntasks) FAIL(-305);
    n = 0;
    for (uint32_t f = h->task_free; f; f = nr_task(r, f)->next)
        if (f > h->task_hwm || ++n > h->task_hwm || nr_task(r, f)->state != NR_TASK_FREE) FAIL(-306);
    if (n != h->task_hwm - h->ntasks) FAIL(-307);

    /* Queues: every ready task is in exactly one. */
    uint32_t qn = 0;
    uint32_t *heads[2] = {&h->rq_head, &h->nq_head}, *tails[2] = {&h->rq_tail, &h->nq_tail};
    for (int q = 0; q < 2; q++) {
        uint32_t last = 0;
        for (uint32_t t = *heads[q]; t; last = t, t = nr_task(r, t)->next) {
            if (t > h->task_hwm || ++qn > h->task_hwm) FAIL(-310);
            if (nr_task(r, t)->state != NR_TASK_READY || nr_task(r, t)->target) FAIL(-311);
            tcount[t]++;
        }
        if (*tails[q] != last) FAIL(-312);
    }
    if (qn != h->rq_len) FAIL(-313);
    uint32_t xn = 0;
    for (int nested = 0; nested < 2; nested++) {
        uint32_t last = 0;
        for (uint32_t t = nested ? h->xnq_head : h->xq_head; t; last = t, t = nr_task(r, t)->next) {
            if (t > h->task_hwm || ++xn > h->task_hwm) FAIL(-315);
            if (nr_task(r, t)->state != NR_TASK_READY || nr_task(r, t)->target) FAIL(-316);
            if (!nr_task(r, t)->nested != !nested) FAIL(-318);
            tcount[t]++;
        }
        if ((nested ? h->xnq_tail : h->xq_tail) != last) FAIL(-317);
    }
    if (xn != h->xq_len) FAIL(-317);
    n = 0;
    for (uint32_t t = h->fail_head; t; t = nr_task(r, t)->next) {
        if (t > h->task_hwm || ++n > h->task_hwm || nr_task(r, t)->state == NR_TASK_FREE) FAIL(-314);
        tcount[t]++;
    }

    /* Processes. */
    uint32_t nidle = 0, nblocked = 0, nspin = 0, nsleep = 0, nactors = 0, nworkers = 0,
             nstarting = 0, nbusy = 0, nenv = 0;
    uint64_t cached = 0, ncached = 0;
    int64_t cpus = h->cpus_total;
    int64_t res[NR_RES] = {0};
    int64_t gpu[NR_MAX_GPUS] = {0};
    int64_t pres[NR_MAX_PG][NR_RES] = {{0}};   /* held from each placement group */
    int64_t pcpus[NR_MAX_PG] = {0};
    uint32_t max_callers = h->max_procs + 1;
    held = calloc(max_callers, sizeof *held);
    if (!held) FAIL(-1);
    for (uint32_t i = 0; i < h->max_procs; i++) {
        nr_proc_t *p = nr_proc(r, i);
        if (p->state == NR_PROC_FREE) continue;
        if (p->state > NR_PROC_EXITED || p->kind > NR_KIND_ACTOR) FAIL(-401);
        if (p->spinning) nspin++;
        if (p->state == NR_PROC_RUNNING) nbusy++;
        for (int k = 0; k < 2; k++)
            if (p->writing[k] && claim(&b, p->writing[k])) FAIL(-402);
        for (int k = 0; k < NR_NCACHE; k++) {
            uint64_t off = p->cache[k] & ~(uint64_t)1;
            if (off && claim(&b, off)) FAIL(-415);
            if (off) { ncached++; cached += nr_arena_usable(r, off) + NR_BLOCK_HDR; }
        }
        uint32_t len = 0, last = 0;
        for (uint32_t t = p->q_head; t; last = t, t = nr_task(r, t)->next) {
            if (t > h->task_hwm || ++len > h->task_hwm) FAIL(-403);
            if (nr_task(r, t)->state != NR_TASK_READY) FAIL(-404);
            tcount[t]++;
        }
        if (p->q_tail != last) FAIL(-405);
        int32_t held_cpus = p->kind == NR_KIND_ACTOR || p->state == NR_PROC_RUNNING
                            ? p->cpus_held : 0;
        {
            nri_acct_t ca = nri_acct(r, p->pool, p->pool_gen);
            if (ca.pg) pcpus[ca.pg - 1] += held_cpus; else cpus -= held_cpus;
        }
        if (p->kind == NR_KIND_ACTOR) {
            nactors++;
            memset(held, 0, max_callers * sizeof *held);
            last = 0;
            for (uint32_t t = p->h_head; t; last = t, t = nr_task(r, t)->next) {
                if (t > h->task_hwm || ++len > h->task_hwm) FAIL(-406);
                nr_task_t *task = nr_task(r, t);
                if (!task->in_queue || task->state == NR_TASK_FREE) FAIL(-407);
                if (task->state == NR_TASK_READY) tcount[t]++;
                if (task->caller <= h->max_procs) held[task->caller]++;
            }
            if (p->h_tail != last) FAIL(-408);
            if (!(p->aflags & NR_ACTOR_UNORDERED)) {
                uint16_t *hc = nr_held_counts(r, i);
                for (uint32_t c = 0; c < max_callers; c++)
                    if (hc[c] != held[c]) FAIL(-409);
            }
            if (p->create_ready) {
                if (p->create_ready > h->task_hwm) FAIL(-410);
                tcount[p->create_ready]++;
            }
        }
        if (p->q_len != len) FAIL(-411);
        nri_acct_t a = nri_acct(r, p->pool, p->pool_gen);
        if (!p->pool && p->pool_gen) FAIL(-414);
        for (uint32_t k = 1; k < NR_RES; k++) {
            if (!!(p->res_mask >> k & 1) != (p->res_held[k] != 0)) FAIL(-412);
            if (a.pg) pres[a.pg - 1][k] += p->res_held[k]; else res[k] += p->res_held[k];
        }
        int32_t each = p->res_held[NR_RES_GPU] >= 1000 ? 1000 : p->res_held[NR_RES_GPU];
        for (uint32_t d = 0; d < NR_MAX_GPUS; d++)
            if (p->gpu_mask >> d & 1) {
                if (d >= h->ngpus) FAIL(-413);
                gpu[d] += each;
            }
        if (p->kind == NR_KIND_WORKER) {
            if (p->state == NR_PROC_IDLE) nidle++;
            if (p->state == NR_PROC_BLOCKED) nblocked++;
            if (p->state == NR_PROC_STARTING) nstarting++;
            if (p->state != NR_PROC_EXITED) nworkers++;
            if (p->state != NR_PROC_EXITED && nri_env_keyed(p)) nenv++;
        }
        if (i >= h->proc_hwm) FAIL(-440);
        if (p->kind != NR_KIND_WORKER && p->env) FAIL(-441);
    }
    for (uint32_t s = h->sleep_head; s; s = nr_proc(r, s - 1)->sleep_next) {
        if (s > h->max_procs || ++nsleep > h->max_procs) FAIL(-420);
        nr_proc_t *p = nr_proc(r, s - 1);
        if (!p->sleeping || p->kind != NR_KIND_WORKER) FAIL(-421);
    }
    if (nidle != h->nidle) FAIL(-422);
    if (nblocked != h->nblocked) FAIL(-423);
    if (nspin != h->nspinning) FAIL(-424);
    if (nsleep != h->nsleeping) FAIL(-425);
    if (nactors != h->nactors) FAIL(-426);
    if (nworkers != h->nworkers) FAIL(-427);
    if (nstarting != h->nstarting) FAIL(-428);
    if (nenv != h->nenv_workers) FAIL(-442);
    if (nbusy != h->nbusy) FAIL(-429);
    if (cached != h->arena.cached || ncached != h->arena.ncached) FAIL(-430);
    uint32_t npending = 0;
    for (uint32_t i = 0; i < NR_MAX_PG; i++) {
        nr_pg_t *g = &h->pgs[i];
        if (g->state > NR_PG_CREATED) FAIL(-432);
        if (g->state == NR_PG_PENDING) npending++;
        if (g->state != NR_PG_FREE) {    /* one of its group's bundles, all alike */
            if (g->head >= NR_MAX_PG || g->nb == 0 || g->nb > NR_MAX_PG) FAIL(-437);
            nr_pg_t *hd = &h->pgs[g->head];
            if (hd->gen != g->gen || hd->state != g->state || hd->nb != g->nb ||
                hd->head != g->head)
                FAIL(-437);
            if (g->head == i) {          /* its chain: nb bundles of this group, then the end */
                uint32_t j = i, n = 1;
                for (; h->pgs[j].next; n++) {
                    j = h->pgs[j].next - 1;
                    if (j >= NR_MAX_PG || n >= g->nb || h->pgs[j].head != i ||
                        h->pgs[j].state == NR_PG_FREE)
                        FAIL(-438);
                }
                if (n != g->nb) FAIL(-438);
            }
        }
        if (g->state != NR_PG_CREATED) {
            if (pcpus[i]) FAIL(-433);
            continue;
        }
        cpus -= g->cpus_res;             /* reserved from the node */
        if (g->cpus_avail + pcpus[i] != g->cpus_res) FAIL(-434);
        for (uint32_t k = 1; k < NR_RES; k++) {
            res[k] += g->res_res[k];
            if (g->res_avail[k] + pres[i][k] != g->res_res[k]) FAIL(-435);
        }
    }
    if (npending != h->npg_pending) FAIL(-436);
    if (cpus != h->cpus_avail) FAIL(-429);
    for (uint32_t k = 1; k < NR_RES; k++)
        if (h->res_avail[k] + res[k] != h->res_total[k]) FAIL(-430);
    for (uint32_t d = 0; d < h->ngpus; d++)
        if (h->gpu_avail[d] + gpu[d] != 1000) FAIL(-431);
    for (uint32_t t = 1; t <= h->task_hwm; t++) {
        nr_task_t *task = nr_task(r, t);
        uint32_t want = task->state == NR_TASK_READY ? 1 : 0;
        if (tcount[t] != want) FAIL(-430);
    }

    /* Ledgers never claim more than an object's count. */
    sum = calloc((size_t)h->obj_hwm + 1, sizeof *sum);
    if (!sum) FAIL(-1);
    for (uint32_t s = 0; s < h->max_procs; s++) {
        uint32_t hwm = nr_proc(r, s)->ledger_hwm;
        int32_t *l = nr_ledger(r, s);
        if (hwm > h->obj_hwm) hwm = h->obj_hwm;
        for (uint32_t i = 0; i < hwm; i++) {
            if (l[i] < 0) FAIL(-501);
            sum[i] += l[i];
        }
    }
    for (uint32_t i = 0; i < h->obj_hwm; i++)
        if (sum[i] && (objs(r)[i].state == NR_OBJ_FREE || objs(r)[i].refs < sum[i])) FAIL(-502);

    /* Names. */
    for (uint32_t i = 0; i < h->max_names; i++) {
        nr_name_t *nm = names(r) + i;
        if (!nm->handle_obj) continue;
        if (!nm->slot1 || nm->slot1 > h->max_procs) FAIL(-510);
    }

    /* Every used block has one owner at most; none is a leak unless a live
     * process is still writing it. */
    for (uint64_t i = 0; i < b.n; i++) {
        uint64_t bn = blk(r, b.off[i])->born;
        if (b.owners[i] > 1) FAIL(-520);
        /* A born block: held by its process's array and/or the payloads
         * that refer to it, which its count says exactly. */
        if (NR_BORN_REFS(bn) != b.brefs[i]) FAIL(-521);
        if (NR_BORN_OWNER(bn) > h->max_procs) FAIL(-522);
        if (bn && b.owners[i]) FAIL(-523);
        if (!b.owners[i] && !bn && out) {
            out->orphan_blocks++;
            out->orphan_bytes += blk(r, b.off[i])->size & ~USED;
        }
    }
    rc = 0;
out:
    free(b.off);
    free(b.owners);
    free(b.brefs);
    free(tcount);
    free(tdeps);
    free(held);
    free(sum);
    if (out) out->code = rc;
    return rc;
}

/* ---- digest: the meaning of the structures, for rollback tests --------- */

typedef struct { uint64_t h; } fnv_t;
static void feed(fnv_t *f, const void *p, size_t n) {
    const unsigned char *c = p;
    for (; n >= 8; n -= 8, c += 8) {     /* a word at a time: the crash-point walk digests often */
        uint64_t w;
        memcpy(&w, c, 8);
        f->h ^= w;
        f->h *= 1099511628211ull;
        f->h ^= f->h >> 29;
    }
    for (; n; n--, c++) { f->h ^= *c; f->h *= 1099511628211ull; }
}
#define FEED(f, x) feed((f), &(x), sizeof(x))

/* Everything a rollback must restore, and nothing it may leave as is:
 * futex words, statistics, high-water marks, the fields of free entries
 * other than their links and generations, payload bytes. */
uint64_t nr_region_digest(nr_region_t *r) {
    nr_header_t *h = r->hdr;
    fnv_t f = {1469598103934665603ull};
    nr_header_t hc;
    memcpy(&hc, h, sizeof hc);
    memset(&hc.lock, 0, sizeof hc.lock);
    hc.lock_pid = 0; hc.repairs = 0; hc.lock_stalls = 0; hc.undo_n = 0; hc.undo_overflow = 0;
    hc.rollbacks = 0; hc.undone = 0; memset(hc.wait_seq, 0, sizeof hc.wait_seq); hc.errors = 0; hc.arena.peak = 0; hc.shutdown = 0;
    hc.broken = 0; hc.spills = 0; hc.restores = 0;
    hc.committed = 0; hc.pf_window = 0; hc.pf_bytes = 0; hc.pf_seq = 0; hc.pf_sleeping = 0;
    hc.pf_pid = 0; hc.pf_errno = 0; hc.pf_quiet_until = 0;                  /* the prefault thread's: no lock */
    hc.hold_since = 0; hc.hold_task = 0;                                     /* hints, not undone */
    memset(hc.spill_dir, 0, sizeof hc.spill_dir);   /* set once at init, not undone */
    /* The header but its placement-group table, then the bundles in use
     * (and of the free ones what names them: generation and state). */
    feed(&f, &hc, offsetof(nr_header_t, pgs));
    feed(&f, (char *)&hc + offsetof(nr_header_t, pgs) + sizeof hc.pgs,
         sizeof hc - offsetof(nr_header_t, pgs) - sizeof hc.pgs);
    for (uint32_t i = 0; i < NR_MAX_PG; i++) {
        if (h->pgs[i].state == NR_PG_FREE) { FEED(&f, h->pgs[i].gen); FEED(&f, h->pgs[i].state); }
        else FEED(&f, h->pgs[i]);
    }
    for (uint32_t i = 0; i < h->max_procs; i++) {
        nr_proc_t pc;
        memcpy(&pc, nr_proc(r, i), sizeof pc);
        pc.wake = 0; pc.ledger_hwm = 0;
        pc.rel_head = pc.rel_tail = 0; memset(pc.rel_ids, 0, sizeof pc.rel_ids);
        FEED(&f, pc);
        for (uint32_t c = 0; c <= h->max_procs; c++) FEED(&f, nr_held_counts(r, i)[c]);
        int32_t *l = nr_ledger(r, i);
        for (uint32_t k = 0; k < h->obj_hwm; k++) FEED(&f, l[k]);
    }
    for (uint32_t i = 0; i < h->obj_hwm; i++) {
        nr_object_t *o = objs(r) + i;
        FEED(&f, o->gen); FEED(&f, o->state); FEED(&f, o->next_free);
        if (o->state == NR_OBJ_FREE) continue;
        FEED(&f, o->dep_head); FEED(&f, o->refs); FEED(&f, o->data); FEED(&f, o->size);
        FEED(&f, o->actor); FEED(&f, o->creator); FEED(&f, o->spill);
    }
    for (uint32_t t = 1; t <= h->task_hwm; t++) {
        nr_task_t tc;
        memcpy(&tc, nr_task(r, t), sizeof tc);
        if (tc.state == NR_TASK_FREE) {
            FEED(&f, tc.gen); FEED(&f, tc.state); FEED(&f, tc.next);
            continue;
        }
        FEED(&f, tc);
    }
    for (uint32_t d = 0; d < h->dep_hwm; d++) FEED(&f, deps(r)[d]);
    for (uint32_t i = 0; i < h->max_names; i++) {
        nr_name_t *nm = names(r) + i;
        if (!nm->handle_obj) continue;
        FEED(&f, i);
        feed(&f, nm, sizeof *nm);
    }
    for (uint64_t off = h->arena_off; off < h->arena.brk;) {
        nr_block_t *bb = blk(r, off);
        uint64_t s = bb->size & ~USED;
        FEED(&f, off); FEED(&f, bb->size); FEED(&f, bb->prev_size);
        if (bb->size & USED) { FEED(&f, bb->req); FEED(&f, bb->born); }
        else { FEED(&f, bb->next_free); FEED(&f, bb->prev_free); }
        if (s < NR_MIN_BLOCK) break;
        off += s;
    }
    return f.h;
}

/* ---- crash points (test builds) ----------------------------------------- */

#ifdef NR_CRASHPOINTS
#include <stdio.h>
#include <sys/syscall.h>
nr_crash_state_t *nr_crash_state;

void nr_undo_check_holder(nr_region_t *r) {
    if (r->hdr->lock.__data.__owner != (int)syscall(SYS_gettid)) {
        fprintf(stderr, "nanoray: a logged store outside the region lock\n");
        abort();
    }
}

void nr_crash_hit(const char *file, int line) {
    nr_crash_state_t *s = nr_crash_state;
    if (!s || s->pid != getpid()) return;
    uint32_t i;
    for (i = 0; i < s->nsites; i++)
        if (s->sites[i].line == line && strcmp(s->sites[i].file, file) == 0) break;
    if (i == s->nsites && i < NR_MAX_CRASH_SITES) {
        strncpy(s->sites[i].file, file, sizeof s->sites[i].file - 1);
        s->sites[i].line = line;
        s->nsites++;
    }
    if (i < NR_MAX_CRASH_SITES) s->sites[i].hits++;
    if (++s->count == s->arm) {
        s->died_site = i + 1;
        kill(getpid(), SIGKILL);
        for (;;) pause();
    }
}

void nr_crash_checkpoint(nr_region_t *r) {
    nr_crash_state_t *s = nr_crash_state;
    if (!s || s->pid != getpid() || !s->arm) return;
    s->digest = nr_region_digest(r);
    s->checkpoints++;
}
#endif
