# cython: language_level=3
"""Direct access to the C layer for tests: a private region, no processes.

The tests drive the arena allocator, the object table and the task queues
through this module exactly as the runtime does, and check the invariants
(nr_arena_check) after every step."""

from libc.stdint cimport uint8_t, uint32_t, int32_t, uint64_t, int64_t
from libc.string cimport memset
from posix.unistd cimport close, getpid
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_ANONYMOUS, MAP_FAILED
from nanoray._core.region cimport *
from nanoray._core.arena cimport *
from nanoray._core.sched cimport *
from nanoray._core.actor cimport *
from nanoray._core.born cimport nr_born_count, NR_PAYLOAD_EXTERN, nr_payload_blocks

cdef extern from "nr_born.h" nogil:
    uint64_t nr_born_alloc(nr_region_t *r, uint64_t n, uint64_t *dirty)
    void nr_born_release(nr_region_t *r, uint64_t off)


cdef extern from "nr_undo.h" nogil:
    enum:
        NR_MAX_CRASH_SITES
    ctypedef struct nr_crash_site_t:
        char file[48]
        int32_t line
        uint64_t hits
    ctypedef struct nr_crash_state_t:
        int32_t pid
        uint32_t nsites
        uint64_t count
        uint64_t arm
        uint32_t died_site
        uint32_t checkpoints
        uint64_t digest
        nr_crash_site_t sites[NR_MAX_CRASH_SITES]
    nr_crash_state_t *nr_crash_state


cdef class CrashPoints:
    """The crash points of this module's copy of the core (NR_CRASHPOINTS),
    in memory shared with forked children: arm(n) in a child makes it
    SIGKILL itself at the n-th logged store it passes, inside the critical
    section; the parent then reads where it died and the digest of the
    structures at its last lock or commit."""
    cdef nr_crash_state_t *s
    cdef size_t size

    def __cinit__(self):
        self.size = sizeof(nr_crash_state_t)
        cdef void *p = mmap(NULL, self.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        if p == MAP_FAILED:
            raise OSError("mmap")
        self.s = <nr_crash_state_t *>p
        memset(p, 0, self.size)
        global nr_crash_state
        nr_crash_state = self.s

    def __dealloc__(self):
        global nr_crash_state
        if nr_crash_state == self.s:
            nr_crash_state = NULL
        munmap(self.s, self.size)

    def arm(self, uint64_t n):
        """Count (n = 0) or die at the n-th point, in this process only."""
        self.s.pid = getpid()
        self.s.count = 0
        self.s.arm = n
        self.s.died_site = 0
        self.s.checkpoints = 0

    def disarm(self):
        self.s.pid = 0
        self.s.arm = 0

    @property
    def count(self):
        return self.s.count

    @property
    def digest(self):
        return self.s.digest

    @property
    def died_at(self):
        return self.site(self.s.died_site - 1) if self.s.died_site else None

    def site(self, uint32_t i):
        return (self.s.sites[i].file.decode(), self.s.sites[i].line)

    def sites(self):
        """Every point passed so far: {(file, line): hits}."""
        return {self.site(i): self.s.sites[i].hits for i in range(self.s.nsites)}


# Above Linux's largest pid_max (2^22): a signal sent to it reaches nobody.
NO_SUCH_PID = (1 << 30) - 7


cdef class CRegion:
    cdef nr_region_t r

    def __cinit__(self, uint64_t arena_bytes=1 << 24, int32_t cpus_milli=2000,
                  uint32_t max_objects=1024, uint32_t max_tasks=1024, uint32_t max_deps=1024):
        cdef nr_config_t cfg
        cfg.arena_bytes = arena_bytes
        cfg.cpus_milli = cpus_milli
        cfg.min_workers = 0
        cfg.max_workers = 8
        cfg.max_procs = 16
        cfg.max_objects = max_objects
        cfg.max_tasks = max_tasks
        cfg.max_deps = max_deps
        cdef int rc = nr_region_create(&self.r, &cfg)
        if rc != 0:
            raise OSError(-rc, "region")

    def __dealloc__(self):
        if self.r.base != NULL:
            nr_region_detach(&self.r)
            close(self.r.fd)

    # arena
    def alloc(self, uint64_t n):
        return nr_arena_alloc(&self.r, n)

    def alloc_small(self, uint64_t n):
        """From the acting process's cache of small blocks (refilled as needed)."""
        return nr_arena_alloc_small(&self.r, n)

    def cached(self):
        """(bytes, blocks) held in processes' small-block caches."""
        return self.r.hdr.arena.cached, self.r.hdr.arena.ncached

    def free(self, uint64_t off):
        nr_arena_free(&self.r, off)

    def usable(self, uint64_t off):
        return nr_arena_usable(&self.r, off)

    def check(self):
        return nr_arena_check(&self.r)

    def largest_free(self):
        return nr_arena_largest_free(&self.r)

    def fill(self, uint64_t off, uint64_t n, int byte):
        memset(self.r.base + off, byte, n)

    def read(self, uint64_t off, uint64_t n):
        return (self.r.base + off)[:n]

    def stats(self):
        cdef nr_stats_t s
        nr_stats(&self.r, &s)
        return s

    # objects: payloads here are bare nr_payload_t headers listing contained ids
    def payload(self, contained=(), bint small=False, uint64_t size=0):
        cdef uint64_t n = max(16 + 8 * len(contained), size)
        cdef uint64_t off = nr_arena_alloc_small(&self.r, n) if small else nr_arena_alloc(&self.r, n)
        cdef nr_payload_t *p = <nr_payload_t *>(self.r.base + off)
        p.nbufs = 0
        p.ncontained = len(contained)
        p.pickle_len = 0
        for i, c in enumerate(contained):
            nr_payload_contained(p)[i] = c
        return off

    def put(self, contained=(), bint small=False, uint64_t size=16):
        return nr_put(&self.r, self.payload(contained, small, size), size)

    # arrays born in the arena (csrc/nr_born.h), acting as the current slot
    def born_alloc(self, uint64_t n):
        return nr_born_alloc(&self.r, n, NULL)

    def born_release(self, uint64_t off):
        nr_born_release(&self.r, off)

    def born_payload(self, blocks):
        """A payload whose buffers are the given born blocks (0: in the payload)."""
        cdef uint32_t nb = len(blocks)
        cdef uint64_t off = nr_arena_alloc(&self.r, 16 + 24 * nb)
        cdef nr_payload_t *p = <nr_payload_t *>(self.r.base + off)
        p.nbufs = nb | NR_PAYLOAD_EXTERN
        p.ncontained = 0
        p.pickle_len = 0
        cdef uint64_t *table = nr_payload_contained(p)
        for i, b in enumerate(blocks):
            table[2 * i] = b
            table[2 * i + 1] = 0
        for i, b in enumerate(blocks):
            nr_payload_blocks(p)[i] = b
        return off

    def born_put(self, blocks):
        return nr_put(&self.r, self.born_payload(blocks), 16 + 24 * len(blocks))

    def born_seal(self, uint64_t oid, blocks):
        cdef uint64_t off = self.born_payload(blocks)
        rc = nr_object_seal(&self.r, oid, off, 16 + 24 * len(blocks), 0)
        if rc != 0:
            nr_arena_free(&self.r, off)
        return rc

    def born_count(self):
        return nr_born_count(&self.r, NULL)

    def create(self):
        return nr_object_create(&self.r)

    def seal(self, uint64_t oid, contained=(), bint error=False, bint small=False):
        cdef uint64_t off = self.payload(contained, small)
        rc = nr_object_seal(&self.r, oid, off, 16, error)
        if rc == 1 or rc < 0:             # not sealed with it (2: freed with the object)
            nr_arena_free(&self.r, off)
        return rc

    def seal_empty(self, uint64_t oid):
        """Seals oid as an error with no payload (what a store that cannot
        hold even the error does)."""
        return nr_object_seal(&self.r, oid, 0, 0, 1)

    def stream_seal(self, uint32_t t, uint64_t cell, uint64_t nxt, contained=()):
        """A streaming generator task t yielded: seals cell, records nxt."""
        cdef uint64_t off = self.payload(contained, False)
        rc = nr_stream_seal(&self.r, t, cell, off, 16, nxt)
        if rc != 0:
            nr_arena_free(&self.r, off)
        return rc

    def stream_state(self, uint32_t t):
        """(pending cell, values yielded) recorded for task t."""
        cdef nr_spec_t *s = <nr_spec_t *>(self.r.base + nr_task(&self.r, t).spec)
        return s.stream_cell, s.streamed

    def try_incref(self, uint64_t oid):
        return nr_object_try_incref(&self.r, oid, 1)

    def incref(self, uint64_t oid):
        nr_object_incref(&self.r, oid)

    def decref(self, uint64_t oid):
        nr_object_decref(&self.r, oid)

    def release(self, uint64_t oid, bint unseen_back=False):
        """As an ObjectRef dropped: a small plain object's free may wait.
        unseen_back: True when the count came back (an unseen failure)."""
        return nr_object_release(&self.r, oid, unseen_back) == 1

    def slot(self):
        return self.r.slot

    def object_index(self, uint64_t oid):
        return nr_id_index1(oid)

    def releases_put_off(self, slot=None):
        return nr_release_pending(&self.r, self.r.slot if slot is None else slot)

    def flush_releases(self):
        nr_release_flush(&self.r)

    def flush_all_releases(self):
        return nr_release_flush_all(&self.r)

    def sweep(self):
        return nr_sweep_uncounted(&self.r)

    def set_borrowed(self, bint b):
        self.r.borrowed = b

    def state(self, uint64_t oid):
        return nr_object_info(&self.r, oid, NULL, NULL)

    def wait(self, uint64_t oid, int64_t timeout_ns):
        return nr_object_wait(&self.r, oid, timeout_ns, 0)

    def wait_many(self, ids, int want, int64_t timeout_ns):
        cdef uint64_t buf[64]
        cdef uint8_t ready[64]
        cdef int n = len(ids), k
        for i, x in enumerate(ids):
            buf[i] = x
        with nogil:                      # a thread of the test may seal meanwhile
            k = nr_wait_many(&self.r, buf, n, want, timeout_ns, 0, ready)
        return k, [bool(ready[i]) for i in range(n)]

    def wait_seq(self):
        """The wait() groups' futex words."""
        return [self.r.hdr.wait_seq[g] for g in range(NR_WAIT_GROUPS)]

    def mark_seen(self, uint64_t oid):
        nr_object_mark_seen(&self.r, oid, 0)

    def waiters_word(self, uint64_t oid):
        cdef nr_object_t *o = nr_object_lookup(&self.r, oid)
        return o.waiters if o != NULL else None

    # tasks
    def proc(self, uint32_t kind=NR_KIND_WORKER):
        slot = nr_proc_alloc(&self.r, kind)
        nr_proc_started(&self.r, slot, NO_SUCH_PID)
        return slot

    def submit(self, deps=(), int nret=1, int32_t cpus=1000, int32_t retries=0,
               uint32_t target=0, uint32_t kind=NR_SPEC_TASK, uint64_t holds=0,
               uint64_t parent=0, res=None, uint64_t pool=0, uint64_t env=0, bint copy=False):
        """copy: the spec is written here and copied into a block the submit
        allocates in its own section (nr_task_submit_copy)."""
        cdef uint32_t nheld = 1 if holds else 0
        cdef uint64_t size = sizeof(nr_spec_t) + 8 * (nret + len(deps) + nheld)
        cdef uint64_t local[56]
        cdef uint64_t off = 0
        cdef nr_spec_t *s = <nr_spec_t *>&local[0]
        if copy:
            assert size <= sizeof(local)
        else:
            off = nr_arena_alloc(&self.r, size)
            s = <nr_spec_t *>(self.r.base + off)
        s.func_id = 0
        s.args_obj = 0
        s.args_len = 0
        s.nret = nret
        s.ndeps = len(deps)
        s.ncontained = nheld
        s.kind = kind
        s.parent = parent
        s.stream_cell = 0
        s.streamed = 0
        for i, d in enumerate(deps):
            nr_spec_ids(s)[nret + i] = d
        if holds:
            nr_spec_ids(s)[nret + len(deps)] = holds
        cdef uint64_t rets[16]
        cdef int32_t rv[8]
        for i in range(8):
            rv[i] = res[i] if res is not None else 0
        if copy:
            t = nr_task_submit_copy(&self.r, s, size, cpus, retries, target,
                                    rv if res is not None else NULL, pool, env, rets)
        else:
            t = nr_task_submit(&self.r, off, cpus, retries, target,
                               rv if res is not None else NULL, pool, env, rets)
        if t == 0:
            if not copy:
                nr_arena_free(&self.r, off)
            return 0, []
        return t, [rets[i] for i in range(nret)]

    def next(self, uint32_t slot):
        """The next task for slot, or 0 when none is runnable now."""
        return nr_task_try_next(&self.r, slot)

    def finish_then_next(self, uint32_t slot, uint32_t done):
        """Finishes task done (0: none) and takes the next for slot in one
        section, never waiting: the next task, or 0."""
        return nr_task_finish_try_next(&self.r, slot, done)

    def seal_finish_then_next(self, uint32_t slot, uint32_t done, uint64_t oid):
        """finish_then_next, sealing oid first in the same section with a
        small payload written here: (the next task or 0, the payload's offset)."""
        cdef uint64_t off = self.payload((), True)
        return nr_task_seal_finish_try_next(&self.r, slot, done, oid, off, 16), off

    def object_data(self, uint64_t oid):
        """A sealed object's payload offset (0 if none, -1 if no such object)."""
        cdef uint64_t data = 0
        if nr_object_info(&self.r, oid, &data, NULL) < 0:
            return -1
        return data

    def next_blocking(self, uint32_t slot, int64_t idle_timeout_ns):
        cdef int64_t t
        with nogil:
            t = nr_task_next(&self.r, slot, 0, idle_timeout_ns)
        return t

    def sleeping(self, uint32_t slot):
        return nr_proc(&self.r, slot).sleeping

    def task_attempts(self, uint32_t t):
        return nr_task(&self.r, t).attempts

    def cpus_available(self):
        cdef nr_stats_t s
        nr_stats(&self.r, &s)
        return s.cpus_avail

    def proc_state(self, uint32_t slot):
        return nr_proc(&self.r, slot).state

    def finish(self, uint32_t slot, uint32_t t):
        nr_task_finish(&self.r, slot, t)

    def retry(self, uint32_t t):
        return nr_task_retry(&self.r, t)

    def reap(self, uint32_t slot):
        return nr_proc_reap(&self.r, slot)

    def define_resource(self, uint32_t k, str name, int64_t total):
        return nr_resource_define(&self.r, k, name.encode(), total)

    def resources(self):
        """(totals, available), NR_RES each."""
        cdef int64_t tot[8]
        cdef int64_t av[8]
        nr_resources(&self.r, tot, av)
        return [tot[i] for i in range(8)], [av[i] for i in range(8)]

    def task_gpus(self, uint32_t t):
        return nr_task(&self.r, t).gpu_mask

    def pg_create(self, cpus, res=None, bundles=False):
        """cpus: one bundle's milli-CPUs, or a list of each bundle's; res:
        one bundle's NR_RES amounts, or a list of each bundle's (or None).
        The group's pool; with bundles, each bundle's pool too."""
        cdef int32_t cv[256]
        cdef int32_t rv[256 * 8]
        cdef uint32_t slots[256]
        sizes = list(cpus) if isinstance(cpus, (list, tuple)) else [cpus]
        if res is not None and not isinstance(res[0], (list, tuple)):
            res = [res]
        for b in range(len(sizes)):
            cv[b] = sizes[b]
            for i in range(8):
                rv[b * 8 + i] = res[b][i] if res is not None else 0
        pool = nr_pg_create(&self.r, len(sizes), cv, rv, slots)
        if not bundles:
            return pool
        return pool, [((pool >> 32) << 32) | (slots[b] + 1) for b in range(len(sizes))] \
            if pool else None

    def pg_gone_error(self, uint64_t err):
        return nr_pg_set_gone_error(&self.r, err)

    def pg_fits(self, uint64_t pool, int32_t cpus):
        return nr_pg_fits(&self.r, pool, cpus, NULL)

    def pg_remove(self, uint64_t pool):
        return nr_pg_remove(&self.r, pool)

    def pg_state(self, uint64_t pool):
        return nr_pg_state(&self.r, pool)

    def pg_tasks(self, uint64_t pool):
        cdef uint64_t out[64]
        cdef uint32_t n = nr_pg_tasks(&self.r, pool, out, 64)
        return [out[i] for i in range(min(n, 64))]

    def cpus_avail(self):
        cdef int64_t tot[8]
        cdef int64_t av[8]
        nr_resources(&self.r, tot, av)
        return av[0]

    def task_release(self, uint32_t t):
        nr_task_release(&self.r, t)

    def drop(self, uint32_t t, uint32_t gen):
        return nr_task_drop(&self.r, t, gen)

    def use_retry(self, uint32_t t):
        return nr_task_use_retry(&self.r, t)

    def task_of(self, uint64_t ret):
        """(task, generation) whose pending return ret is, or (0, 0)."""
        cdef uint32_t gen = 0
        cdef uint32_t t = nr_task_of(&self.r, ret, &gen)
        return t, gen

    def cancel(self, uint32_t t, uint32_t gen):
        """(state or -1, pid running it, kind)."""
        cdef int32_t pid = 0
        cdef uint32_t kind = 0, nret = 4
        cdef uint64_t rets[4]
        cdef int st = nr_task_cancel(&self.r, t, gen, 1, &pid, &kind, rets, &nret)
        return st, pid, kind

    def task_cancelled(self, uint32_t t):
        return nr_task(&self.r, t).cancelled

    def children(self, uint64_t parent):
        cdef uint64_t out[64]
        cdef uint32_t n = nr_task_children(&self.r, parent, out, 64)
        return [out[i] for i in range(min(n, 64))]

    def block(self, uint32_t slot):
        nr_proc_block(&self.r, slot)

    def stuck(self):
        return nr_stuck(&self.r)

    def unblock(self, uint32_t slot):
        nr_proc_unblock(&self.r, slot)

    def shutdown(self):
        nr_shutdown(&self.r)

    # actors
    def actor_create(self, uint64_t handle_obj, int32_t max_restarts=0, int32_t cpus=0, key=None,
                     uint32_t flags=0, res=None, uint64_t pool=0):
        """(slot, gen), or (-2, existing handle) when the name is taken."""
        cdef uint32_t gen = 0
        cdef uint64_t existing = 0
        cdef bytes k = key.encode() if key is not None else None
        cdef const char *kp = NULL
        cdef int32_t rv[8]
        for i in range(8):
            rv[i] = res[i] if res is not None else 0
        if k is not None:
            kp = k
        slot = nr_actor_create(&self.r, handle_obj, max_restarts, cpus,
                               rv if res is not None else NULL, pool, flags, kp, &gen, &existing)
        if slot == -2:
            return -2, existing
        return slot, gen

    def actor_started(self, uint32_t slot, int32_t pid=NO_SUCH_PID):
        """What the zygote and the new process do: take the spawn request, start.
        The pid is one no process can have: kill() sends it real signals."""
        cdef uint32_t out[64]
        cdef int n = nr_spawn_take(&self.r, out, 64)
        assert slot in [out[i] for i in range(n)], "no spawn request for the actor"
        nr_proc_started(&self.r, slot, pid)

    def spawn_take(self, int max_out=64):
        """The slots the zygote should start processes in now."""
        cdef uint32_t out[64]
        cdef int n = nr_spawn_take(&self.r, out, min(max_out, 64))
        return [out[i] for i in range(n)]

    def started(self, uint32_t slot):
        """What a pool worker does once forked into a slot spawn_take gave."""
        nr_proc_started(&self.r, slot, NO_SUCH_PID)

    def proc_env(self, uint32_t slot):
        """0 for a fresh pool worker, else (1 << 63) | its runtime_env key."""
        return nr_proc(&self.r, slot).env

    def spawn_giveback(self, uint32_t slot):
        """What the zygote does when a fork fails."""
        nr_spawn_giveback(&self.r, slot)

    def actor_lookup(self, key):
        cdef uint64_t h = 0
        cdef uint32_t slot = 0, gen = 0
        if nr_actor_lookup(&self.r, key.encode(), &h, &slot, &gen) != 0:
            return None
        return h, slot, gen

    def use_ledger(self, slot):
        """Act as the process in `slot`, keeping its ledger (None: stop, and
        act as slot 0 without a ledger, as before)."""
        if slot is None:
            self.r.slot = 0
            self.r.ledger = NULL
            self.r.ledger_hwm = NULL
            return
        self.r.slot = slot
        self.r.ledger = nr_ledger(&self.r, slot)
        self.r.ledger_hwm = &nr_proc(&self.r, slot).ledger_hwm

    # spilling (the C state only: no files here)
    def spill_dir(self, str d):
        return nr_spill_set_dir(&self.r, d.encode())

    def pin(self, uint64_t oid):
        """(state, data, spill): data 0 and no pin taken unless in memory."""
        cdef uint64_t data = 0, size = 0, file = 0
        cdef uint32_t spill = 0
        st = nr_object_pin(&self.r, oid, &data, &size, &spill, &file)
        return st, data, spill

    def unpin(self, uint64_t oid):
        nr_object_unpin(&self.r, oid)

    def raw_pin(self, uint64_t oid, int d):
        """What a racing reader does first (its pin, before it sees the mark)."""
        cdef nr_object_t *o = <nr_object_t *>(self.r.base + self.r.hdr.objs_off) + (nr_id_index1(oid) - 1)
        o.pins += d

    def spill_pick(self, uint64_t need):
        """(id, data, file) of the object to write out, id 0 if none."""
        cdef uint64_t data = 0, size = 0, file = 0
        oid = nr_spill_pick(&self.r, need, &data, &size, &file)
        return oid, data, file

    def spill_file(self, uint64_t oid):
        """The file a spilled object is in (0 if it is not spilled)."""
        cdef uint64_t data = 0, size = 0, file = 0
        cdef uint32_t spill = 0
        nr_object_pin(&self.r, oid, &data, &size, &spill, &file)
        if data:
            nr_object_unpin(&self.r, oid)
        return file

    def spill_commit(self, uint64_t oid):
        return nr_spill_commit(&self.r, oid)

    def spill_commit_as(self, uint64_t oid, uint64_t size):
        return nr_spill_commit_as(&self.r, oid, size)

    def spill_abort(self, uint64_t oid):
        nr_spill_abort(&self.r, oid)

    def spill_restore(self, uint64_t oid, uint64_t file, uint64_t off):
        return nr_spill_restore(&self.r, oid, file, off)

    def may_progress(self, uint32_t slot, int on):
        nr_proc_may_progress(&self.r, slot, on)

    def set_slot(self, uint32_t slot):
        """Act as the process in `slot` (who submits, for per-caller order)."""
        self.r.slot = slot

    def actor_die(self, uint32_t slot, uint32_t gen, uint64_t death):
        return nr_actor_die(&self.r, slot, gen, death)

    def actor_kill(self, uint32_t slot, uint32_t gen, int no_restart=1):
        return nr_actor_kill(&self.r, slot, gen, no_restart)

    def actor_reap(self, uint32_t slot, uint64_t death, uint64_t unavail=0):
        return nr_actor_reap(&self.r, slot, death, unavail)

    def actor_info(self, uint32_t slot, uint32_t gen):
        cdef uint32_t flags = 0, restarts = 0
        cdef int32_t pid = 0
        st = nr_actor_info(&self.r, slot, gen, &flags, &restarts, &pid)
        return None if st < 0 else (st, flags, restarts)

    def set_free_generation(self, uint64_t gen):
        """Sets the generation of every free object entry below the table's
        high-water mark (to test generations past 32 bits)."""
        cdef uint32_t i
        cdef nr_object_t *o
        for i in range(self.r.hdr.obj_hwm):
            o = <nr_object_t *>(self.r.base + self.r.hdr.objs_off) + i
            if o.state == NR_OBJ_FREE:
                o.gen = gen

    def object_payload(self, uint64_t oid):
        """The bytes of a sealed object's payload (None if it has none)."""
        cdef uint64_t data = 0, size = 0
        if nr_object_info(&self.r, oid, &data, &size) < 0 or data == 0:
            return None
        return (self.r.base + data)[:size]

    def verify(self):
        """(code, orphan blocks, zero-count objects): code 0 when consistent."""
        cdef nr_verify_t v
        nr_lock(&self.r)
        nr_region_verify(&self.r, &v)
        nr_unlock(&self.r)
        return v.code, v.orphan_blocks, v.zero_count_objects

    def digest(self):
        """A hash of what the structures mean (taken under the lock)."""
        nr_lock(&self.r)
        d = nr_region_digest(&self.r)
        nr_unlock(&self.r)
        return d

    def digest_unlocked(self):
        """The digest without taking the lock (so without repairing it)."""
        return nr_region_digest(&self.r)

    def header(self, name):
        return {"repairs": self.r.hdr.repairs, "rollbacks": self.r.hdr.rollbacks,
                "undone": self.r.hdr.undone, "broken": self.r.hdr.broken,
                "undo_n": self.r.hdr.undo_n}[name]

    def lock(self):
        nr_lock(&self.r)

    def unlock(self):
        nr_unlock(&self.r)
