/* nr_born_local: numpy's allocator for this process, and the table of the
 * born blocks its arrays live in (see nr_born_local.h, and nr_born.h for
 * the design).  The table is small (one entry per live array of at least
 * the threshold), so it is a plain array searched linearly, under a
 * mutex: numpy may allocate and free from several threads (threaded
 * actors), with or without the GIL. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "nr_born_local.h"

#define NR_MADV_POPULATE_READ 22     /* <linux/mman.h>, Linux >= 5.14 */

typedef struct {
    char *addr;          /* where the array's data starts: region base + off */
    uint64_t off;        /* the block's payload offset */
    uint64_t len;        /* bytes mapped for it: a whole number of pages */
    uint64_t req;        /* bytes numpy asked for */
    uint8_t handed;      /* handed to the store (a later put copies) */
    uint8_t priv;        /* and mapped copy-on-write here since */
    uint8_t anon;        /* copied into anonymous memory here (before a fork) */
    uint8_t foreign;     /* a forked child's copy of its parent's array */
} entry_t;

static nr_region_t *g_r;
static uint64_t g_threshold = UINT64_MAX;
static pid_t g_pid;                  /* the process the region slot is */
static int g_paused;
static int g_lazy;                   /* hand-offs wait for nr_born_settle */
static nr_np_allocator_t g_prev;     /* the handler there was before */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static entry_t *g_tab;
static size_t g_n, g_cap;
static nr_born_stats_t g_st;
/* Which 64 KiB chunks of the region this process has (most likely) in its
 * page tables: set once it mapped them all (MADV_POPULATE_READ), cleared
 * when it remaps them.  Mapping pages that are mapped already walks them
 * for nothing (50 us per MiB, as much as writing them). */
#define CHUNK_SHIFT 16
static uint64_t *g_warm;
static size_t g_nchunks;
static __thread int t_ready;

#define STAT(f, d) __atomic_add_fetch(&g_st.f, (d), __ATOMIC_RELAXED)

static uint64_t pages(uint64_t n) { return (n + NR_BORN_PAGE - 1) & ~(uint64_t)(NR_BORN_PAGE - 1); }

/* Whether every chunk of [off, off + len) is warm. */
static int warm(uint64_t off, uint64_t len) {
    if (!g_warm || !len) return 0;
    for (uint64_t c = off >> CHUNK_SHIFT; c <= (off + len - 1) >> CHUNK_SHIFT && c < g_nchunks; c++)
        if (!(__atomic_load_n(&g_warm[c / 64], __ATOMIC_RELAXED) & (1ull << (c % 64)))) return 0;
    return 1;
}

static void set_warm(uint64_t off, uint64_t len, int on) {
    if (!g_warm || !len) return;
    for (uint64_t c = off >> CHUNK_SHIFT; c <= (off + len - 1) >> CHUNK_SHIFT && c < g_nchunks; c++) {
        if (on) __atomic_or_fetch(&g_warm[c / 64], 1ull << (c % 64), __ATOMIC_RELAXED);
        else __atomic_and_fetch(&g_warm[c / 64], ~(1ull << (c % 64)), __ATOMIC_RELAXED);
    }
}

int nr_born_thread_ready(void) { return t_ready; }
void nr_born_thread_set(void) { t_ready = 1; }
void nr_born_pause(int paused) { __atomic_store_n(&g_paused, paused, __ATOMIC_RELAXED); }
void nr_born_get_stats(nr_born_stats_t *s) { *s = g_st; }

/* Under g_mu: the index of the entry whose data starts at p, -1 if none. */
static long find_addr(const void *p) {
    for (size_t i = 0; i < g_n; i++)
        if (g_tab[i].addr == p) return (long)i;
    return -1;
}

static void *born_new(uint64_t n, int zero) {
    nr_region_t *r = g_r;
    if (!r || n < g_threshold || __atomic_load_n(&g_paused, __ATOMIC_RELAXED) ||
        getpid() != g_pid)
        return NULL;
    uint64_t dirty = 0;
    uint64_t off = nr_born_alloc(r, n, &dirty);
    if (!off) {
        STAT(fallbacks, 1);
        return NULL;
    }
    entry_t e = {r->base + off, off, pages(n), n, 0, 0, 0, 0};
    pthread_mutex_lock(&g_mu);
    if (g_n == g_cap) {
        size_t cap = g_cap ? 2 * g_cap : 64;
        entry_t *t = realloc(g_tab, cap * sizeof *t);
        if (!t) {
            pthread_mutex_unlock(&g_mu);
            nr_born_release(r, off);
            return NULL;
        }
        g_tab = t;
        g_cap = cap;
    }
    g_tab[g_n++] = e;
    pthread_mutex_unlock(&g_mu);
    /* Pages used before are in the page cache, but perhaps not in this
     * process's page tables (another process used them, or this one
     * remapped them): one call maps them all, 3-4x faster than a fault per
     * 4 KiB page (shmem gets no huge pages here); a no-op before Linux 5.14. */
    uint64_t used = dirty < e.len ? dirty : e.len;
    if (used && !warm(off, used) && madvise(e.addr, used, NR_MADV_POPULATE_READ) == 0)
        set_warm(off, used, 1);
    /* calloc: fresh pages of the memfd are zero; reused ones are not. */
    if (zero && dirty) memset(e.addr, 0, dirty < n ? dirty : n);
    STAT(born, 1);
    STAT(born_bytes, n);
    STAT(live, 1);
    STAT(live_bytes, e.len);
    return e.addr;
}

/* The entry (already out of the table) is done with. */
static void release(entry_t e) {
    nr_region_t *r = g_r;
    if (e.foreign || e.priv || e.anon) {
        set_warm(e.off, e.len, 0);
        /* The region's view of the range again, so that this process reads
         * what the store holds there (and will reuse it for). */
        void *m = mmap(e.addr, e.len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, r->fd,
                       (off_t)e.off);
        if (m == MAP_FAILED) {
            STAT(remap_failures, 1);         /* kept: never reused under a stale view */
            return;
        }
    } else {
        set_warm(e.off, e.len, 1);           /* most arrays were written whole */
    }
    if (e.foreign) return;                   /* the parent's block: the parent frees it */
    nr_born_release(r, e.off);
    STAT(frees, 1);
    STAT(live, -1);
    STAT(live_bytes, -e.len);
}

/* Born blocks are in the region: anything else is the previous handler's,
 * told apart without the mutex. */
static inline int in_region(const void *p) {
    nr_region_t *r = __atomic_load_n(&g_r, __ATOMIC_ACQUIRE);
    return r && (const char *)p >= r->base && (const char *)p < r->base + r->size;
}

static void h_free(void *ctx, void *p, size_t size) {
    (void)ctx;
    if (in_region(p)) {
        pthread_mutex_lock(&g_mu);
        long i = find_addr(p);
        if (i >= 0) {
            entry_t e = g_tab[i];
            g_tab[i] = g_tab[--g_n];
            pthread_mutex_unlock(&g_mu);
            release(e);
            return;
        }
        pthread_mutex_unlock(&g_mu);
    }
    g_prev.free(g_prev.ctx, p, size);
}

static void *h_malloc(void *ctx, size_t n) {
    void *p = born_new(n, 0);
    return p ? p : g_prev.malloc(g_prev.ctx, n);
}

static void *h_calloc(void *ctx, size_t nelem, size_t elsize) {
    size_t n;
    void *p = __builtin_mul_overflow(nelem, elsize, &n) ? NULL : born_new(n, 1);
    return p ? p : g_prev.calloc(g_prev.ctx, nelem, elsize);
}

static void *h_realloc(void *ctx, void *p, size_t n) {
    uint64_t req = 0;
    int ours = 0;
    if (in_region(p)) {
        pthread_mutex_lock(&g_mu);
        long i = find_addr(p);
        if (i >= 0) {
            ours = 1;
            req = g_tab[i].req;
        }
        pthread_mutex_unlock(&g_mu);
    }
    if (!ours) return g_prev.realloc(g_prev.ctx, p, n);
    /* A born block moves: to another (or the previous handler's), copied. */
    void *q = h_malloc(ctx, n ? n : 1);
    if (!q) return NULL;
    memcpy(q, p, req < n ? req : n);
    h_free(ctx, p, req);
    return q;
}

nr_np_handler_t nr_born_handler = {
    "nanoray_born_in_shm", 1, {NULL, h_malloc, h_calloc, h_realloc, h_free}};

int nr_born_init(nr_region_t *r, uint64_t threshold, const nr_np_allocator_t *prev) {
    if (r->fd < 0 || !prev) return -1;
    g_prev = *prev;
    g_pid = getpid();
    g_nchunks = (r->size >> CHUNK_SHIFT) + 1;
    g_warm = calloc((g_nchunks + 63) / 64, sizeof *g_warm);   /* NULL: always populate */
    g_threshold = threshold < NR_BORN_PAGE ? NR_BORN_PAGE : threshold;
    __atomic_store_n(&g_r, r, __ATOMIC_RELEASE);
    return 0;
}

int nr_born_find(const char *ptr, uint64_t len, uint64_t *block) {
    int found = 0;
    if (!g_r || getpid() != g_pid) return 0;
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < g_n; i++) {
        entry_t *e = &g_tab[i];
        if (ptr >= e->addr && ptr + len <= e->addr + e->req) {
            found = !e->handed && !e->anon && !e->foreign;
            if (found) *block = e->off;
            break;
        }
    }
    pthread_mutex_unlock(&g_mu);
    return found;
}

/* Under g_mu: maps e's pages copy-on-write (same file pages, same bytes:
 * only later writes differ).  0, or -1 with the mapping as it was. */
static int make_private(entry_t *e) {
    set_warm(e->off, e->len, 0);
    void *m = mmap(e->addr, e->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED,
                   g_r->fd, (off_t)e->off);
    if (m == MAP_FAILED) {
        STAT(remap_failures, 1);
        return -1;
    }
    e->priv = 1;
    return 0;
}

int nr_born_handoff(uint64_t block, int lazy) {
    int rc = -1;
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < g_n; i++) {
        entry_t *e = &g_tab[i];
        if (e->off != block || e->foreign) continue;
        if (e->handed || e->anon) break;     /* another thread handed it first */
        if (!lazy && make_private(e) != 0) break;
        if (lazy) __atomic_store_n(&g_lazy, 1, __ATOMIC_RELEASE);
        e->handed = 1;
        STAT(handoffs, 1);
        STAT(handoff_bytes, e->req);
        rc = 0;
        break;
    }
    pthread_mutex_unlock(&g_mu);
    return rc;
}

int nr_born_settle(void) {
    int n = 0;
    if (!__atomic_load_n(&g_lazy, __ATOMIC_ACQUIRE)) return 0;   /* after every task: cheap */
    pthread_mutex_lock(&g_mu);
    __atomic_store_n(&g_lazy, 0, __ATOMIC_RELEASE);
    for (size_t i = 0; i < g_n; i++) {
        entry_t *e = &g_tab[i];
        if (!e->handed || e->priv || e->foreign || e->anon) continue;
        /* Never silently shared: writes fault; where not even that can be
         * done (no mapping left to split), the process ends rather than let
         * a later write change the object its array became. */
        if (make_private(e) != 0 && mprotect(e->addr, e->len, PROT_READ) != 0) {
            static const char msg[] =
                "nanoray: this worker cannot make an array it returned private again (out of "
                "memory mappings or address space); it exits so that no later write can "
                "change the stored object\n";
            ssize_t w = write(2, msg, sizeof msg - 1);
            (void)w;
            _exit(70);
        }
        n++;
    }
    pthread_mutex_unlock(&g_mu);
    if (n) STAT(settled, n);
    return n;
}

int nr_born_hidden(uint64_t off, uint64_t len) {
    int hidden = 0;
    if (!g_r) return 0;
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < g_n && !hidden; i++) {
        entry_t *e = &g_tab[i];
        hidden = (e->priv || e->anon || e->foreign) && off < e->off + e->len && e->off < off + len;
    }
    pthread_mutex_unlock(&g_mu);
    return hidden;
}

/* Fork copies anonymous memory page by page, copy-on-write, but a range
 * of the region stays one memory for parent and child: the child would
 * see the parent's later writes to its arrays, and write into them.  So
 * before a fork every born array of this process moves into anonymous
 * memory at the same address (one copy, here, before the child exists:
 * copying in the child would race with the parent's writes).  The block
 * stays held by the array (nothing else may be placed under a range this
 * process does not see), and it is never handed off again: a put copies. */
void nr_born_before_fork(void) {
    if (!g_r || getpid() != g_pid) return;
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < g_n; i++) {
        entry_t *e = &g_tab[i];
        if (e->anon || e->foreign) continue;
        set_warm(e->off, e->len, 0);
        void *tmp = mmap(NULL, e->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                         -1, 0);
        if (tmp == MAP_FAILED) continue;
        memcpy(tmp, e->addr, e->len);
        if (mremap(tmp, e->len, e->len, MREMAP_MAYMOVE | MREMAP_FIXED, e->addr) == MAP_FAILED) {
            munmap(tmp, e->len);
            continue;
        }
        e->anon = 1;
        g_st.fork_copies++;
    }
    pthread_mutex_unlock(&g_mu);
}

/* In the child: every entry is the parent's block (never freed here). */
void nr_born_after_fork_child(void) {
    if (!g_r) return;
    pthread_mutex_init(&g_mu, NULL);         /* another thread may have held it */
    for (size_t i = 0; i < g_n; i++) {
        entry_t *e = &g_tab[i];
        /* Not copied before the fork (no memory for the copy): still the
         * parent's memory, so this child may not touch it at all (a fork
         * to exec never does); a touch faults, never writes through. */
        if (!e->anon && !e->foreign && mprotect(e->addr, e->len, PROT_NONE) != 0) {
            static const char msg[] =
                "nanoray: a process forked in a task shares arrays with its parent that it "
                "could not be given copies of (out of memory); it exits\n";
            ssize_t w = write(2, msg, sizeof msg - 1);
            (void)w;
            _exit(70);
        }
        e->foreign = 1;
    }
}
