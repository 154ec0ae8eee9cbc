/* nr_pg: placement groups.  A group reserves resources from the node, one
 * reservation per bundle, each in a slot of pgs[] chained from the group's
 * first (head): its tasks and actors are charged to a bundle (the one they
 * name, or the first with room: nri_pool_pick), everything else to what
 * the node has left.  A group the node has no room for yet is pending, and
 * is placed whole, oldest slot first, when resources come back (nri_kick,
 * nr_task_finish).  Removing a group gives what it has unused back to the
 * node; what its running tasks hold goes back as they finish. */
#include "nr_internal.h"

/* Walks the bundles of the group whose first slot is head (i: slot index). */
#define FOR_BUNDLES(h, head, i, n) \
    for (uint32_t i = (head), n = 0; n < (h)->pgs[head].nb && i < NR_MAX_PG; \
         i = (h)->pgs[i].next - 1, n++)

static int fits_node(nr_header_t *h, uint32_t head) {
    int64_t cpus = 0, res[NR_RES] = {0};
    FOR_BUNDLES(h, head, i, n) {
        cpus += h->pgs[i].cpus_res;
        for (uint32_t k = 1; k < NR_RES; k++) res[k] += h->pgs[i].res_res[k];
    }
    if (cpus > h->cpus_avail) return 0;
    for (uint32_t k = 1; k < NR_RES; k++)
        if (res[k] > h->res_avail[k]) return 0;
    return 1;
}

static void place(nr_region_t *r, uint32_t head) {
    nr_header_t *h = r->hdr;
    FOR_BUNDLES(h, head, i, n) {
        nr_pg_t *g = &h->pgs[i];
        W(h->cpus_avail, h->cpus_avail - g->cpus_res);
        W(g->cpus_avail, g->cpus_res);
        for (uint32_t k = 1; k < NR_RES; k++) {
            if (!g->res_res[k]) continue;
            W(h->res_avail[k], h->res_avail[k] - g->res_res[k]);
            W(g->res_avail[k], g->res_res[k]);
        }
        W(g->state, NR_PG_CREATED);
        WDEC(h->npg_pending);
    }
    WINC(h->xq_gen);                     /* its tasks may run now */
}

void nri_pg_place_pending(nr_region_t *r) {
    nr_header_t *h = r->hdr;
    for (uint32_t i = 0; i < NR_MAX_PG && h->npg_pending; i++) {
        nr_pg_t *g = &h->pgs[i];
        if (g->state == NR_PG_PENDING && g->head == i && fits_node(h, i)) place(r, i);
    }
}

/* The first slot of the live group that pool names (any of its bundles'
 * pools), or -1. */
static int live_head(nr_region_t *r, uint64_t pool) {
    uint32_t i = ((uint32_t)pool & ~NR_POOL_ANY) - 1;
    if (i >= NR_MAX_PG) return -1;
    nr_pg_t *g = &r->hdr->pgs[i];
    return g->state != NR_PG_FREE && g->gen == (uint32_t)(pool >> 32) ? (int)g->head : -1;
}

uint64_t nr_pg_create(nr_region_t *r, uint32_t nb, const int32_t *cpus, const int32_t *res,
                      uint32_t *slots) {
    nr_header_t *h = r->hdr;
    wakeups_t w = {0};
    uint64_t pool = 0;
    if (nb == 0 || nb > NR_MAX_PG) return 0;
    nr_lock(r);
    uint32_t found = 0, gen = 0;
    for (uint32_t i = 0; i < NR_MAX_PG && found < nb; i++)
        if (h->pgs[i].state == NR_PG_FREE) slots[found++] = i;
    if (found == nb) {
        /* One generation for the group: the highest any of its slots had
         * (each slot's only grows, so no old holder of one matches it). */
        for (uint32_t b = 0; b < nb; b++)
            if (h->pgs[slots[b]].gen > gen) gen = h->pgs[slots[b]].gen;
        for (uint32_t b = 0; b < nb; b++) {
            nr_pg_t *g = &h->pgs[slots[b]];
            const int32_t *bres = res ? res + (size_t)b * NR_RES : NULL;
            nr_undo_bytes(r, g, sizeof *g);  /* a free entry: plain stores, logged at once */
            memset(g, 0, sizeof *g);
            g->gen = gen;
            g->head = slots[0];
            g->nb = nb;
            g->next = b + 1 < nb ? slots[b + 1] + 1 : 0;
            g->cpus_res = cpus[b] > 0 ? cpus[b] : 0;
            for (uint32_t k = 1; k < NR_RES; k++) g->res_res[k] = bres && bres[k] > 0 ? bres[k] : 0;
            g->state = NR_PG_PENDING;
            WINC(h->npg_pending);
        }
        if (fits_node(h, slots[0])) place(r, slots[0]);
        pool = ((uint64_t)gen << 32) | (slots[0] + 1);
        nri_kick(r, &w);
    }
    nr_unlock(r);
    nri_flush(r, &w);
    return pool;
}

int nr_pg_remove(nr_region_t *r, uint64_t pool) {
    nr_header_t *h = r->hdr;
    wakeups_t w = {0};
    int rc = -1;
    nr_lock(r);
    int head = live_head(r, pool);
    if (head >= 0) {
        /* (next and nb stay as they are: the walk reads them.) */
        FOR_BUNDLES(h, (uint32_t)head, i, n) {
            nr_pg_t *g = &h->pgs[i];
            if (g->state == NR_PG_CREATED) {
                WADD(h->cpus_avail, g->cpus_avail);
                for (uint32_t k = 1; k < NR_RES; k++)
                    if (g->res_res[k]) WADD(h->res_avail[k], g->res_avail[k]);
            } else {
                WDEC(h->npg_pending);
            }
            W(g->state, NR_PG_FREE);
            W(g->gen, g->gen + 1);       /* its holders now give back to the node */
            W(g->cpus_avail, 0);
            for (uint32_t k = 1; k < NR_RES; k++) W(g->res_avail[k], 0);
        }
        WINC(h->xq_gen);
        nri_kick(r, &w);                 /* the node has more: places and wakes */
        rc = 0;
    }
    nr_unlock(r);
    nri_flush(r, &w);
    return rc;
}

int nr_pg_state(nr_region_t *r, uint64_t pool) {
    nr_lock(r);
    int head = live_head(r, pool);
    int st = head >= 0 ? (int)r->hdr->pgs[head].state : -1;
    nr_unlock(r);
    return st;
}

static int unstarted_in(nr_region_t *r, nr_task_t *task, uint64_t pool) {
    uint32_t i = (task->pool & ~NR_POOL_ANY) - 1;
    return task->state != NR_TASK_RUNNING && i < NR_MAX_PG &&
           r->hdr->pgs[i].head == ((uint32_t)pool & ~NR_POOL_ANY) - 1 &&
           task->pool_gen == (uint32_t)(pool >> 32);
}

uint32_t nr_pg_tasks(nr_region_t *r, uint64_t pool, uint64_t *out, uint32_t max) {
    return nri_list_tasks(r, unstarted_in, pool, out, max);
}

int nr_pg_set_gone_error(nr_region_t *r, uint64_t err) {
    return nri_set_error(r, &r->hdr->pg_gone_err, err);
}

int nr_pg_fits(nr_region_t *r, uint64_t pool, int32_t cpus, const int32_t *res) {
    nr_header_t *h = r->hdr;
    nr_lock(r);
    int head = live_head(r, pool), ok = 0;
    if (head >= 0) {
        uint32_t one = ((uint32_t)pool & ~NR_POOL_ANY) - 1, any = (uint32_t)pool & NR_POOL_ANY;
        FOR_BUNDLES(h, any ? (uint32_t)head : one, j, n) {
            ok = nri_bundle_holds(&h->pgs[j], cpus, res);
            if (ok || !any) break;
        }
    }
    nr_unlock(r);
    return ok;
}
