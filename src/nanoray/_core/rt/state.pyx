# Snapshots of the tables, for nanoray.util.state and `python -m nanoray
# status`.  Each is copied into plain C rows under the region lock, then
# turned into tuples: no Python object may be made while it is held (a
# garbage collection could run, free an ObjectRef, and its decref would
# take the lock again).
# Included by _runtime.pyx: one extension module, one concern per file.

cdef struct _TaskRow:
    uint32_t t, gen, state, kind, target, attempts, cancelled, deps_left
    int32_t pid, cpus
    uint64_t func_id, parent, ret0, pool


cdef struct _ObjRow:
    uint64_t id, size
    int64_t refs
    uint32_t state, pins, spill, task


def task_rows(Region reg=None):
    """Every live task: (task, gen, state, kind, pid, actor slot + 1,
    attempts, cancelled, deps_left, milli-CPUs, function id, parent, first
    return id, placement group)."""
    if reg is None:
        reg = _running()
    cdef uint32_t cap = reg.r.hdr.task_hwm + 64, n = 0, t
    cdef _TaskRow *rows = <_TaskRow *>malloc(sizeof(_TaskRow) * cap)
    cdef nr_task_t *task
    cdef nr_spec_t *spec
    if rows == NULL:
        raise MemoryError()
    try:
        nr_lock(&reg.r)
        t = 1
        while t <= reg.r.hdr.task_hwm and n < cap:
            task = nr_task(&reg.r, t)
            if task.state != NR_TASK_FREE and task.spec:
                spec = <nr_spec_t *>(reg.r.base + task.spec)
                rows[n].t, rows[n].gen, rows[n].state = t, task.gen, task.state
                rows[n].kind, rows[n].target = task.kind, task.target
                rows[n].attempts, rows[n].cancelled = task.attempts, task.cancelled
                rows[n].deps_left = task.deps_left
                rows[n].pool = 0
                if 0 < (task.pool & ~NR_POOL_ANY) <= NR_MAX_PG:  # its group's id
                    rows[n].pool = ((<uint64_t>task.pool_gen) << 32) | \
                        (reg.r.hdr.pgs[(task.pool & ~NR_POOL_ANY) - 1].head + 1)
                rows[n].pid = nr_proc(&reg.r, task.proc - 1).pid if task.proc else 0
                rows[n].cpus = task.cpus
                rows[n].func_id, rows[n].parent = spec.func_id, spec.parent
                rows[n].ret0 = nr_spec_ids(spec)[0] if spec.nret else 0
                n += 1
            t += 1
        nr_unlock(&reg.r)
        return [(r.t, r.gen, r.state, r.kind, r.pid, r.target, r.attempts, r.cancelled,
                 r.deps_left, r.cpus, r.func_id, r.parent, r.ret0, r.pool)
                for r in rows[:n]]
    finally:
        free(rows)


cdef struct _ProcRow:
    uint32_t slot, kind, state, task, aflags, restarts, gen
    int32_t pid, cpus
    uint64_t handle_obj


def proc_rows(Region reg=None):
    """Every process slot in use: (slot, pid, kind, state, task running,
    actor flags, restarts, milli-CPUs held, handle object, generation)."""
    if reg is None:
        reg = _running()
    cdef uint32_t i, n = 0, cap = reg.r.hdr.max_procs
    cdef nr_proc_t *p
    cdef _ProcRow *rows = <_ProcRow *>malloc(sizeof(_ProcRow) * max(cap, 1))
    if rows == NULL:
        raise MemoryError()
    try:
        nr_lock(&reg.r)
        for i in range(cap):
            p = nr_proc(&reg.r, i)
            if p.state != NR_PROC_FREE:
                rows[n].slot, rows[n].pid, rows[n].kind, rows[n].state = i, p.pid, p.kind, p.state
                rows[n].task, rows[n].aflags, rows[n].restarts = p.task, p.aflags, p.restarts
                rows[n].cpus, rows[n].handle_obj, rows[n].gen = p.cpus_held, p.handle_obj, p.gen
                n += 1
        nr_unlock(&reg.r)
        return [(r.slot, r.pid, r.kind, r.state, r.task, r.aflags, r.restarts, r.cpus,
                 r.handle_obj, r.gen) for r in rows[:n]]
    finally:
        free(rows)


def object_rows(Region reg=None, uint32_t limit=10000):
    """Up to limit live objects: (id, state, size, refs, pins, spill, the
    task that will seal it or 0)."""
    if reg is None:
        reg = _running()
    cdef uint32_t n = 0, i
    nr_release_flush_all(&reg.r)          # frees processes put off: not live objects
    limit = min(limit, reg.r.hdr.obj_hwm + 64)
    cdef _ObjRow *rows = <_ObjRow *>malloc(sizeof(_ObjRow) * max(limit, 1))
    cdef nr_object_t *o
    if rows == NULL:
        raise MemoryError()
    try:
        nr_lock(&reg.r)
        i = 0
        while i < reg.r.hdr.obj_hwm and n < limit:
            o = (<nr_object_t *>(reg.r.base + reg.r.hdr.objs_off)) + i
            if o.state != NR_OBJ_FREE:
                rows[n].id = ((o.gen & ((1ULL << 40) - 1)) << 24) | (i + 1)
                rows[n].state, rows[n].size, rows[n].refs = o.state, o.size, o.refs
                rows[n].pins, rows[n].spill = o.pins, o.spill
                rows[n].task = o.task if o.state == NR_OBJ_PENDING else 0
                n += 1
            i += 1
        nr_unlock(&reg.r)
        return [(r.id, r.state, r.size, r.refs, r.pins, r.spill, r.task) for r in rows[:n]]
    finally:
        free(rows)


def events(Region reg=None, uint32_t limit=1 << 17):
    """The newest task events, oldest first: (start ns, end ns, task id,
    kind, pid, name, bytes in, bytes out, failed)."""
    if reg is None:
        reg = _running()
    limit = min(limit, reg.r.hdr.events_cap)
    cdef nr_event_t *rows = <nr_event_t *>malloc(sizeof(nr_event_t) * max(limit, 1))
    if rows == NULL:
        raise MemoryError()
    cdef uint32_t n
    try:
        n = nr_events_read(&reg.r, rows, limit)
        return [(e.start_ns, e.end_ns, e.task, e.kind, e.pid,
                 (<bytes>e.name).decode("utf-8", "replace"), e.bytes_in, e.bytes_out,
                 bool(e.failed)) for e in rows[:n]]
    finally:
        free(rows)


def current_call():
    """(name, callable) of the task or actor call running in this thread or
    coroutine: "f" or "Cls.method" and the function or bound method; None
    in the driver and between calls."""
    if _in_task:                       # a pool task: its function was the last looked up
        return _task_name, (_last_entry[0] if _last_entry is not None else None)
    cdef Region reg = _region
    t = _task_id.get()
    if t is None or reg is None:
        return None
    # An actor's call: read from its spec, which names the class (creation)
    # or the call's "Class.method" label where a task names its function.
    cdef nr_spec_t *spec = <nr_spec_t *>(reg.r.base + nr_task(&reg.r, <uint32_t>(t & 0xFFFFFFFF)).spec)
    cdef bint is_error = False
    if not spec.func_id:
        return None
    if spec.kind == NR_SPEC_ACTOR_CREATE:
        cls = _function(reg, spec.func_id)
        return getattr(cls, "__name__", "Actor") + ".__init__", getattr(cls, "__init__", None)
    label = _value(reg, spec.func_id, &is_error)
    if is_error or type(label) is not str:
        return None
    head, _, given = (<str>label).partition("\x1e")      # .options(name=) after \x1e
    name = head.partition("\x1f")[0]
    return given or name, getattr(_actor, name.rpartition(".")[2], None)
