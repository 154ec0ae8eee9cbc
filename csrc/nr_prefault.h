/* nr_prefault: the store's cold path.
 *
 * The first write to a page of the memfd costs the kernel allocating and
 * zeroing it (~1.7 GB/s here, against ~20 GB/s for a copy into mapped
 * pages), and splitting that work across threads does not scale (the
 * kernel's per-file and per-zone locks).  So memory is made ready before
 * it is needed, by a thread in the driver that uses only a CPU nobody else
 * wants (SCHED_IDLE):
 *
 *   - it keeps the `window` bytes past the arena's brk (where the next
 *     allocations that find no free block go) allocated and zeroed in the
 *     memfd (fallocate, twice: see prepare() in nr_prefault.c) and mapped
 *     in the driver (a read per 64 KiB), a few MiB at a time, so a put
 *     from the driver lands in mapped pages;
 *   - it begins once the pool's first workers have started (or after 2 s):
 *     during start-up its kernel work slowed the starting processes even
 *     from an otherwise idle CPU;
 *   - it works only while nanoray is idle: no pool worker running a task
 *     and no large copy in flight (nr_prefault_touch marks those), since
 *     even from an idle CPU its work slowed them (memory bandwidth, the
 *     page allocator);
 *   - allocators that move brk past half the window wake it (a futex in the
 *     region), so it keeps ahead;
 *   - it never writes a byte (both calls leave contents as they are), never
 *     takes the region's lock and keeps no state but the `committed` hint,
 *     raised only after the pages are there: a process killed at any point
 *     of it corrupts nothing and leaks nothing the region does not already
 *     own (the pages belong to the memfd, freed with it).
 *
 * Memory: the pages it allocates are the store's memory, counted in the
 * driver's RSS (RssShmem) and in the machine's Shmem: at most `window`
 * bytes past the highest brk reached, and never past object_store_memory.
 * Like every page the store touched, they stay until shutdown.
 *
 * Another process (a worker) writing a payload maps those pages with one
 * fault per page unless told otherwise: nr_prefault_touch reads one byte
 * per 64 KiB first, and a read fault maps the 16 pages around it that are
 * already in the file (the kernel's fault-around), which makes copying into
 * them about 3x faster (3.4 -> 11 GB/s here) and costs nothing measurable
 * on pages already mapped.
 *
 * One thread per process at most.  A forked child does not inherit it
 * (pthread_atfork forgets it there); stop joins it.
 */
#ifndef NR_PREFAULT_H
#define NR_PREFAULT_H

#include "nr_region.h"

#define NR_PREFAULT_CHUNK (4u << 20)        /* bytes per fallocate + populate */
#define NR_TOUCH_MIN (1u << 20)             /* nr_prefault_touch: smaller copies are left alone */
/* It starts once the pool's first workers are up, or after this long. */
#define NR_PREFAULT_GATE_NS (2000LL * 1000 * 1000)
/* It keeps off while a large copy runs and this long after, and looks
 * again this often while a task runs. */
#define NR_PREFAULT_SETTLE_NS (20LL * 1000 * 1000)
#define NR_PREFAULT_BUSY_POLL_NS (10LL * 1000 * 1000)

/* Starts the thread on r (window > 0 bytes); 0, -EBUSY if one runs in this
 * process, or -errno.  r's mapping must outlive it: stop first. */
int nr_prefault_start(nr_region_t *r, uint64_t window);
/* Stops and joins it (a no-op if none runs in this process). */
void nr_prefault_stop(void);
/* 1 while this process runs one on the region mapped at base. */
int nr_prefault_running(const char *base);
/* After an allocation: wakes the thread if brk moved past half its window.
 * Cheap when nothing is to be done (two loads and a compare). */
void nr_prefault_kick(nr_region_t *r);
/* Maps pages of [p, p + n) that are already in the memfd before a copy
 * into them (read faults, fault-around): see above.  Leaves contents.
 * Chunks of r this process mapped before are skipped (a bitmap per
 * process), so a copy into warm memory pays nothing for it. */
void nr_prefault_touch(nr_region_t *r, const char *p, uint64_t n);

#endif
