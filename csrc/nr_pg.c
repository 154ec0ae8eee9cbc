/* nr_pg: placement groups.  A group reserves resources from the node: its
 * tasks and actors are charged to the group (nri_acct), everything else to
 * what the node has left.  All its bundles are on this one node, so the
 * group keeps one pool for them.  A group the node has no room for yet is
 * pending, and is placed, oldest slot first, when resources come back
 * (nri_kick, nr_task_finish).  Removing a group gives what it has unused
 * back to the node; what its running tasks hold goes back as they finish. */
#include "nr_internal.h"

static int fits_node(nr_header_t *h, nr_pg_t *g) {
    if (g->cpus_res > h->cpus_avail) return 0;
    for (uint32_t k = 1; k < NR_RES; k++)
        if (g->res_res[k] > h->res_avail[k]) return 0;
    return 1;
}

static void place(nr_region_t *r, nr_pg_t *g) {
    nr_header_t *h = r->hdr;
    W(h->cpus_avail, h->cpus_avail - g->cpus_res);
    W(g->cpus_avail, g->cpus_res);
    for (uint32_t k = 1; k < NR_RES; k++) {
        if (!g->res_res[k]) continue;
        W(h->res_avail[k], h->res_avail[k] - g->res_res[k]);
        W(g->res_avail[k], g->res_res[k]);
    }
    W(g->state, NR_PG_CREATED);
    WDEC(h->npg_pending);
    WINC(h->xq_gen);                     /* its tasks may run now */
}

void nri_pg_place_pending(nr_region_t *r) {
    nr_header_t *h = r->hdr;
    for (uint32_t i = 0; i < NR_MAX_PG && h->npg_pending; i++) {
        nr_pg_t *g = &h->pgs[i];
        if (g->state == NR_PG_PENDING && fits_node(h, g)) place(r, g);
    }
}

static nr_pg_t *live_pg(nr_region_t *r, uint64_t pool) {
    uint32_t i = (uint32_t)pool;
    if (i == 0 || i > NR_MAX_PG) return NULL;
    nr_pg_t *g = &r->hdr->pgs[i - 1];
    return g->state != NR_PG_FREE && g->gen == (uint32_t)(pool >> 32) ? g : NULL;
}

uint64_t nr_pg_create(nr_region_t *r, int32_t cpus, const int32_t *res) {
    nr_header_t *h = r->hdr;
    wakeups_t w = {0};
    uint64_t pool = 0;
    nr_lock(r);
    for (uint32_t i = 0; i < NR_MAX_PG; i++) {
        nr_pg_t *g = &h->pgs[i];
        if (g->state != NR_PG_FREE) continue;
        uint32_t gen = g->gen;
        nr_undo_bytes(r, g, sizeof *g);  /* a free entry: plain stores, logged at once */
        memset(g, 0, sizeof *g);
        g->gen = gen;
        g->cpus_res = cpus;
        for (uint32_t k = 1; k < NR_RES; k++) g->res_res[k] = res && res[k] > 0 ? res[k] : 0;
        g->state = NR_PG_PENDING;
        WINC(h->npg_pending);
        if (fits_node(h, g)) place(r, g);
        pool = ((uint64_t)gen << 32) | (i + 1);
        nri_kick(r, &w);
        break;
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
    nr_pg_t *g = live_pg(r, pool);
    if (g) {
        if (g->state == NR_PG_CREATED) {
            WADD(h->cpus_avail, g->cpus_avail);
            for (uint32_t k = 1; k < NR_RES; k++)
                if (g->res_res[k]) WADD(h->res_avail[k], g->res_avail[k]);
        } else {
            WDEC(h->npg_pending);
        }
        W(g->state, NR_PG_FREE);
        W(g->gen, g->gen + 1);           /* its holders now give back to the node */
        W(g->cpus_avail, 0);
        for (uint32_t k = 1; k < NR_RES; k++) W(g->res_avail[k], 0);
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
    nr_pg_t *g = live_pg(r, pool);
    int st = g ? (int)g->state : -1;
    nr_unlock(r);
    return st;
}

static int unstarted_in(nr_region_t *r, nr_task_t *task, uint64_t pool) {
    (void)r;
    return task->state != NR_TASK_RUNNING && task->pool == (uint32_t)pool &&
           task->pool_gen == (uint32_t)(pool >> 32);
}

uint32_t nr_pg_tasks(nr_region_t *r, uint64_t pool, uint64_t *out, uint32_t max) {
    return nri_list_tasks(r, unstarted_in, pool, out, max);
}

int nr_pg_set_gone_error(nr_region_t *r, uint64_t err) {
    nr_lock(r);
    if (r->hdr->pg_gone_err) nri_decref(r, r->hdr->pg_gone_err);
    if (err) nri_incref(r, err);
    W(r->hdr->pg_gone_err, err);
    nr_unlock(r);
    return 0;
}

int nr_pg_fits(nr_region_t *r, uint64_t pool, int32_t cpus, const int32_t *res) {
    nr_lock(r);
    nr_pg_t *g = live_pg(r, pool);
    int ok = g != NULL && cpus <= g->cpus_res;
    for (uint32_t k = 1; ok && res && k < NR_RES; k++)
        if (res[k] > g->res_res[k]) ok = 0;
    nr_unlock(r);
    return ok;
}
