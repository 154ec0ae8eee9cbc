# The Region handle: this process's mapping of the shared region, and the
# process-wide runtime state (which region, which slot) that the other parts read.
# Included by _runtime.pyx: one extension module, one concern per file.


cdef class Region:
    """This process's mapping of the shared region.

    The mapping stays until the last Region reference is gone, so arrays and
    refs that outlive shutdown() still point at mapped memory."""

    def __cinit__(self):
        self.r.base = NULL
        self.r.fd = -1
        self.r.spawn_fd = -1
        self.pid = _pid

    @staticmethod
    def create(uint64_t arena_bytes, int32_t cpus_milli, uint32_t min_workers,
               uint32_t max_workers, uint32_t max_procs=1024,
               uint32_t max_objects=1 << 22, uint32_t max_tasks=1 << 22,
               uint32_t max_deps=1 << 23):
        cdef Region self = Region.__new__(Region)
        cdef nr_config_t cfg
        cfg.arena_bytes = arena_bytes
        cfg.cpus_milli = cpus_milli
        cfg.min_workers = min_workers
        cfg.max_workers = max_workers
        cfg.max_procs = max_procs
        cfg.max_objects = max_objects
        cfg.max_tasks = max_tasks
        cfg.max_deps = max_deps
        cdef int rc = nr_region_create(&self.r, &cfg)
        if rc != 0:
            raise OSError(-rc, "nanoray: cannot create the shared region: " + os.strerror(-rc))
        self.session = self.r.hdr.session
        return self

    @staticmethod
    def attach(int fd):
        cdef Region self = Region.__new__(Region)
        cdef int rc = nr_region_attach(&self.r, fd)
        if rc != 0:
            raise OSError(-rc, "nanoray: cannot map the shared region: " + os.strerror(-rc))
        self.session = self.r.hdr.session
        return self

    def __dealloc__(self):
        if self.r.base != NULL and nr_prefault_running(self.r.base):
            with nogil:
                nr_prefault_stop()        # its thread uses this mapping
        if self.r.base != NULL:
            nr_region_detach(&self.r)
        if self.r.fd >= 0:
            close(self.r.fd)
            self.r.fd = -1

    @property
    def fd(self):
        return self.r.fd

    @property
    def size(self):
        return self.r.size

    def prefault_start(self, uint64_t window):
        """Starts this process's prefault thread (csrc/nr_prefault.h): it keeps
        `window` bytes past the store's brk allocated and mapped, at idle
        priority.  OSError if it cannot (EBUSY: one runs already)."""
        cdef int rc = nr_prefault_start(&self.r, window)
        if rc != 0:
            raise OSError(-rc, "nanoray: cannot start the prefault thread: " + os.strerror(-rc))

    def prefault_stop(self):
        """Stops and joins it, if it runs on this region in this process."""
        if self.r.base != NULL and nr_prefault_running(self.r.base):
            with nogil:
                nr_prefault_stop()

    def prefault_running(self):
        return self.r.base != NULL and nr_prefault_running(self.r.base) != 0

    def prefault_stats(self):
        """The cold path's figures, in bytes: committed (the store's memory
        with pages behind it, by writers or the prefault thread: what it
        costs in RSS), window (ahead of brk; 0 while no thread runs),
        prefaulted (made ready by the thread in all), pid (its process, 0
        if none) and errno (why it stopped early, 0 if it did not)."""
        cdef nr_header_t *h = self.r.hdr
        cdef uint64_t top = h.committed if h.committed > h.arena.peak else h.arena.peak
        return dict(committed=top - h.arena_off, window=h.pf_window, prefaulted=h.pf_bytes,
                    pid=h.pf_pid, errno=h.pf_errno)

    def set_spawn_fd(self, int fd):
        self.r.spawn_fd = fd

    def close_fd(self):
        """Closes the memfd; the mapping stays valid."""
        if self.r.fd >= 0:
            os.close(self.r.fd)
            self.r.fd = -1

    def proc_alloc(self, uint32_t kind):
        return nr_proc_alloc(&self.r, kind)

    def proc_started(self, uint32_t slot, int32_t pid):
        nr_proc_started(&self.r, slot, pid)

    def proc_kind(self, uint32_t slot):
        return nr_proc(&self.r, slot).kind

    def lock_holder(self):
        """The pid holding the region's lock at this instant, 0 if none."""
        return nr_lock_holder(&self.r)

    def tasks_finished(self):
        """Tasks and actor calls finished so far (the timeline's event count)."""
        return self.r.hdr.events_next

    def worker_pids(self):
        cdef uint32_t i
        cdef nr_proc_t *p
        out = []
        for i in range(self.r.hdr.max_procs):
            p = nr_proc(&self.r, i)
            if p.kind == NR_KIND_WORKER and p.state != NR_PROC_FREE and p.pid > 0:
                out.append(p.pid)
        return out

    def spawn_take(self, int limit=64):
        """Slots of the workers to start now (at most limit)."""
        cdef uint32_t out[64]
        cdef int n = nr_spawn_take(&self.r, out, min(limit, 64))
        return [out[i] for i in range(n)]

    def spawn_giveback(self, uint32_t slot):
        """A slot from spawn_take that got no process (its fork failed): the
        next spawn_take asks for it again."""
        nr_spawn_giveback(&self.r, slot)

    def shutdown(self):
        nr_shutdown(&self.r)

    def is_shut_down(self):
        return self.r.hdr.shutdown != 0

    def stats(self):
        cdef nr_stats_t s
        nr_release_flush_all(&self.r)     # what processes put off is freed first
        nr_stats(&self.r, &s)
        return dict(objects=s.nobjects, tasks=s.ntasks, queued=s.rq_len,
                    waiting_for_resources=s.xq_len, workers=s.nworkers, idle=s.nidle, blocked=s.nblocked,
                    sleeping=s.nsleeping, spinning=s.nspinning, starting=s.nstarting,
                    busy=s.nbusy, ncpu=s.ncpu,
                    max_workers=s.max_workers,
                    cpus_total=s.cpus_total / 1000.0, cpus_available=s.cpus_avail / 1000.0,
                    store_used=s.arena_used, store_allocations=s.arena_nallocs,
                    store_touched=s.arena_peak, store_capacity=s.arena_size,
                    lock_repairs=s.repairs, actors=s.nactors, lock_stalls=s.lock_stalls,
                    spilled_objects=s.spilled_objects, spilled_bytes=s.spilled_bytes,
                    spills=s.spills, restores=s.restores)

    def verify(self):
        """Checks every table, queue and counter of the region against the
        others (under the lock): a dict with code (0 when consistent, else
        the first broken invariant), orphan_blocks and orphan_bytes (store
        blocks nothing owns: a leak once nothing is being written), and
        zero_count_objects (objects nothing counts, not yet freed)."""
        cdef nr_verify_t v
        cdef uint32_t rollbacks, broken
        cdef uint64_t undone
        nr_release_flush_all(&self.r)     # frees processes put off are not leaks
        nr_lock(&self.r)                  # no Python object is made while it is held
        nr_region_verify(&self.r, &v)
        rollbacks, undone, broken = self.r.hdr.rollbacks, self.r.hdr.undone, self.r.hdr.broken
        nr_unlock(&self.r)
        return dict(code=v.code, orphan_blocks=v.orphan_blocks, orphan_bytes=v.orphan_bytes,
                    zero_count_objects=v.zero_count_objects, rollbacks=rollbacks,
                    undone=undone, broken=broken)

    def objects(self):
        """Every live object, read without the lock (a snapshot that may be
        stale): dicts of id, state, refs, size and holders, the counts each
        process's ledger records ({pid: count})."""
        cdef uint32_t i, s, n
        cdef nr_object_t *o
        cdef nr_proc_t *p
        nr_release_flush_all(&self.r)
        n = self.r.hdr.obj_hwm
        out = []
        for i in range(n):
            o = <nr_object_t *>(self.r.base + self.r.hdr.objs_off) + i
            if o.state == NR_OBJ_FREE:
                continue
            holders = {}
            for s in range(self.r.hdr.max_procs):
                p = nr_proc(&self.r, s)
                if p.state != NR_PROC_FREE and i < p.ledger_hwm and nr_ledger(&self.r, s)[i]:
                    holders[p.pid] = nr_ledger(&self.r, s)[i]
            out.append(dict(id=((o.gen & ((1 << 40) - 1)) << 24) | (i + 1),
                            state=("pending", "ready", "error")[o.state - 1],
                            refs=o.refs, size=o.size, holders=holders, pins=o.pins,
                            spilled=("no", "writing", "yes")[o.spill]))
        return out

    @property
    def borrowed(self):
        """Whether this process acts in another's slot (a fork's child, the
        zygote), keeping no small blocks there."""
        return self.r.borrowed != 0

    def arena_check(self):
        """0 when the allocator's invariants hold, else which one broke."""
        nr_lock(&self.r)
        rc = nr_arena_check(&self.r)
        nr_unlock(&self.r)
        return rc


def _after_fork_in_child():
    global _pid
    _pid = getpid()
    if _region is not None:
        # It acts in its parent's slot (until set_process_state gives it
        # one: a worker): no small-block cache there (csrc/nr_arena.h), and
        # no frees put off in its parent's ring.
        _region.r.borrowed = 1


os.register_at_fork(after_in_child=_after_fork_in_child)


def current_region():
    return _region


cdef Region _running():
    """This process's region; raises when nanoray is not running here (never
    started, or shut down, maybe by another thread meanwhile)."""
    cdef Region reg = _region
    if reg is None:
        raise _exc.RaySystemError("nanoray is not running: it was shut down (or never "
                                  "started in this process)")
    return reg


def set_process_state(Region region, uint32_t slot):
    """Makes `region` this process's runtime (driver at init, workers at start)."""
    global _region, _slot, _watcher
    _region = region
    _slot = slot
    drop_function_cache()
    # Caches of a previous runtime would keep its region mapped (rt/waiting.pyx).
    if _watcher is not None and _watcher.reg is not region:
        _watcher = None
    if region is not None:
        region.r.slot = slot
        region.r.borrowed = 0
        region.pid = _pid
        region.r.ledger = NULL
        kind = nr_proc(&region.r, slot).kind
        if kind == NR_KIND_WORKER or kind == NR_KIND_ACTOR:
            # The C layer records the counts this process takes and gives
            # back.  The driver keeps none: when it dies, the runtime goes.
            region.r.ledger = nr_ledger(&region.r, slot)
            region.r.ledger_hwm = &nr_proc(&region.r, slot).ledger_hwm


def borrow_slot(Region region):
    """This process acts in the slot set_process_state gave it, which is
    another's (the zygote in the driver's): it keeps no small blocks there
    (csrc/nr_arena.h).  Processes forked from it set their own slot."""
    region.r.borrowed = 1


def drop_function_cache():
    """Forgets the functions this worker loaded, releasing the refs they hold."""
    global _funcs, _last_fid, _last_entry
    _funcs = {}
    _last_fid = 0
    _last_entry = None


def set_liveness_check(check):
    global _liveness_check
    _liveness_check = check
