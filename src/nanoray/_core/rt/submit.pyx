# Submitting tasks: exporting functions, writing a task spec, queueing it.
# Included by _runtime.pyx: one extension module, one concern per file.


def ref_if_alive(uint64_t oid):
    """An ObjectRef to oid if the object is sealed and still counted, else None."""
    cdef Region reg = _region
    if reg is None or not nr_object_try_incref(&reg.r, oid, 1):
        return None
    return _adopt(reg, oid)


def export_function(func, on_reserved):
    """Stores a pickled function; returns the ref that keeps it.

    In two steps: the object is reserved first and on_reserved(ref) is
    called before pickling, so a RemoteFunction inside the function's own
    globals (a function that submits itself) pickles the id of this very
    export, and copies of it in workers reuse it instead of storing the
    function again."""
    cdef Region reg = _running()
    cdef uint64_t oid = nr_object_create(&reg.r)
    if oid == 0:
        raise _table_full(reg)
    ref = _adopt(reg, oid)
    cdef _Pickled p
    cdef uint64_t off
    try:
        on_reserved(ref)
        # In band: arrays a function captures arrive in each worker as its
        # own writable copy, as in Ray (not read-only views of the store).
        p = _pickle(func, True, False, True)
        off = _store(reg, p)
    except BaseException:
        nr_object_seal(&reg.r, oid, 0, 0, 1)     # never leave it pending
        raise
    nr_object_seal(&reg.r, oid, off, p.size, 0)
    return ref


def submit(ObjectRef func_ref, tuple args, dict kwargs, uint32_t nret,
           int32_t cpus_milli, int32_t retries, dict extras=None, tuple res=None,
           uint64_t pool=0):
    """Queues func(*args, **kwargs); returns its return ObjectRef(s).
    extras: what the worker needs beyond the call (retry_exceptions, a
    generator's mode, runtime_env), or None."""
    cdef Region reg = _running()
    if func_ref._reg is not reg:
        raise _exc.RaySystemError("nanoray: this function was exported to a runtime that was shut down")
    return _submit(reg, func_ref._id, args, kwargs, nret, cpus_milli, retries, 0,
                   NR_SPEC_TASK, None, None, extras, res, pool)


# True while a task or actor here has a runtime_env or a placement group its
# calls may inherit (kept by nanoray._runtime_env): then .remote() takes the
# Python path, which merges them in.
cdef bint _inheriting = False


def set_inheriting(bint on):
    global _inheriting
    _inheriting = on


def inheriting():
    return _inheriting


@cython.final
cdef class PlainCall:
    """What a remote function's .remote() needs on its common path (one
    return, one CPU at most, no runtime_env, resources, strategy or other
    extras), kept by the RemoteFunction once its first call took the Python
    path: its export in this runtime, its options, and how many positional
    arguments it takes."""
    cdef Region reg
    cdef ObjectRef ref
    cdef int32_t cpus_milli, retries
    cdef Py_ssize_t least, most

    def __cinit__(self, ObjectRef ref, int32_t cpus_milli, int32_t retries, Py_ssize_t least,
                  Py_ssize_t most):
        self.reg = ref._reg
        self.ref = ref
        self.cpus_milli = cpus_milli
        self.retries = retries
        self.least = least
        self.most = most

    def current(self):
        """Whether it was made for the running runtime."""
        return self.reg is _region


def remote_function_remote(self, /, *args, **kwargs):
    """Submits a task; returns its ObjectRef (a list of them if num_returns > 1)."""
    cdef PlainCall p
    cdef Py_ssize_t n
    if not kwargs and not _inheriting:
        o = self._plain
        if type(o) is PlainCall:
            p = <PlainCall>o
            n = len(args)
            if p.reg is _region and p.least <= n <= p.most:
                return _submit(p.reg, p.ref._id, args, None, 1, p.cpus_milli, p.retries, 0,
                               NR_SPEC_TASK, None, None)
    return self._submit(args, kwargs, self._compiled)


# Named as the method it is (copy, pickle, repr): pickled by reference, it
# is found again as nanoray.remote_function.RemoteFunction.remote.
remote_function_remote.__name__ = "remote"
remote_function_remote.__qualname__ = "RemoteFunction.remote"
remote_function_remote.__module__ = "nanoray.remote_function"


# Items per task of f.map() when no chunksize is given: enough tasks to
# balance the CPUs (4 per CPU, as multiprocessing.Pool.map), and a result
# is at most this many items late.
MAP_CHUNK_MAX = 1024


def submit_map(ObjectRef func_ref, list items, Py_ssize_t chunksize, int32_t cpus_milli,
               dict extras, tuple res, uint64_t pool, single):
    """f.map(): the items (tuples of arguments) go in tasks of chunksize
    items, each with one return per item, written and queued as one task;
    an item passing an ObjectRef goes alone through single(item), so its
    value is resolved before it runs, as in f.remote(ref).  chunksize 0:
    the default.  Returns one ref per item, in order."""
    cdef Region reg = _running()
    if func_ref._reg is not reg:
        raise _exc.RaySystemError("nanoray: this function was exported to a runtime that was shut down")
    cdef Py_ssize_t n = len(items), i
    cdef int32_t cpus = max(1, reg.r.hdr.cpus_total // 1000)
    if chunksize <= 0:
        chunksize = min(MAP_CHUNK_MAX, (n + 4 * cpus - 1) // (4 * cpus))
    cdef list out = [None] * n
    cdef list chunk = [], where = []
    cdef object item, a
    cdef bint by_ref
    for i in range(n):
        item = items[i]
        by_ref = False
        for a in <tuple>item:
            if type(a) is ObjectRef:
                by_ref = True
                break
        if by_ref:
            out[i] = single(item)
            continue
        chunk.append(item)
        where.append(i)
        if len(chunk) == chunksize:
            _submit_chunk(reg, func_ref, chunk, where, out, cpus_milli, extras, res, pool)
            chunk = []
            where = []
    if chunk:
        _submit_chunk(reg, func_ref, chunk, where, out, cpus_milli, extras, res, pool)
    return out


cdef _submit_chunk(Region reg, ObjectRef func_ref, list chunk, list where, list out,
                   int32_t cpus_milli, dict extras, tuple res, uint64_t pool):
    """One task for the chunk's items; their refs go to out[where[j]].  A
    chunk whose arguments do not fit in the store goes as two halves."""
    cdef Py_ssize_t j, half
    cdef uint64_t most = 0
    if len(chunk) > 1:                   # an eighth of the store at most, so chunks can
        most = (reg.r.hdr.arena.end - reg.r.hdr.arena_off) // 8   # be spilled and loaded
    # Re-run after a death while some item may still have a retry: each
    # item's max_retries is counted by the worker (_run_map); a death before
    # any item runs (loading the arguments) counts against this bound only.
    cdef int64_t per_item = extras.get("retries", 0)
    cdef int32_t retries = -1 if per_item < 0 else <int32_t>min((per_item + 1) * len(chunk),
                                                                 0x7fffffff)
    try:
        refs = _submit(reg, func_ref._id, (chunk,), None, len(chunk), cpus_milli, retries,
                       0, NR_SPEC_TASK, None, None, extras, res, pool, most)
    except (_exc.ObjectStoreFullError, _ChunkTooBig):
        if len(chunk) == 1:
            raise
        half = len(chunk) // 2
        _submit_chunk(reg, func_ref, chunk[:half], where[:half], out, cpus_milli, extras,
                      res, pool)
        _submit_chunk(reg, func_ref, chunk[half:], where[half:], out, cpus_milli, extras,
                      res, pool)
        return
    if len(chunk) == 1:
        out[<Py_ssize_t>where[0]] = refs
    else:
        for j in range(len(chunk)):
            out[<Py_ssize_t>where[j]] = (<list>refs)[j]


cdef dict _env_keys = {}              # id(env) -> (env, key): a function's env is one dict


cdef uint64_t _env_key(env) except? 0:
    """The scheduler's key for a task's runtime_env (0: none): tasks of one
    key run in workers of their own (see nanoray._runtime_env).  Cached by
    the dict's identity (it is kept alive with its key, so the id is not
    reused meanwhile); merged environments of nested calls are new dicts."""
    if not env:
        return 0
    hit = _env_keys.get(id(env))
    if hit is not None and (<tuple>hit)[0] is env:
        return (<tuple>hit)[1]
    from nanoray._runtime_env import key
    k = key(env)
    if len(_env_keys) >= 256:
        _env_keys.clear()
    _env_keys[id(env)] = (env, k)
    return k


class _ChunkTooBig(Exception):
    """A chunk of f.map() whose arguments are too large for one task."""


cdef object _submit(Region reg, uint64_t func_id, tuple args, dict kwargs, uint32_t nret,
                    int32_t cpus_milli, int32_t retries, uint32_t target, uint32_t kind,
                    ObjectRef holds, object method, dict extras=None, tuple res=None,
                    uint64_t pool=0, uint64_t most=0):
    """Writes a task spec and queues it; returns the return ref(s) (None
    when nret is 0).  `holds` is a ref the task keeps counted while pending
    (an actor's handle object); `method` names the actor method called, and
    rides in the argument payload as (args, kwargs, method); `extras` makes
    it (args, kwargs, method, extras)."""
    cdef list deps = None
    cdef Py_ssize_t i
    cdef object a
    cdef list largs
    for i in range(len(args)):
        a = args[i]
        if type(a) is ObjectRef:
            _check_ref(a)
            (<ObjectRef>a)._seen = True    # a failure it holds fails that task, and is seen there
            if deps is None:
                deps = []
                largs = list(args)
            largs[i] = _DepArg(len(deps))
            deps.append(a)
    if deps is not None:
        args = tuple(largs)
    cdef dict kw = None
    if kwargs:
        for k, a in kwargs.items():
            if type(a) is ObjectRef:
                _check_ref(a)
                (<ObjectRef>a)._seen = True
                if deps is None:
                    deps = []
                if kw is None:
                    kw = dict(kwargs)
                kw[k] = _DepArg(len(deps))
                deps.append(a)
        if kw is not None:
            kwargs = kw
    else:
        kwargs = None
    cdef _Pickled p = None
    cdef unsigned char simple[SIMPLE_MAX]
    cdef int sn = -1 if extras is not None else _simple_call_into(args, kwargs, method, simple)
    cdef uint64_t args_bytes = 16 + sn     # simple arguments: written from the stack
    cdef ObjectRef args_ref = None
    if sn < 0:
        try:
            if extras is not None:
                p = _pickle((args, kwargs, method, extras), False, True, False, False)   # (a dict)
            else:
                p = _pickle((args, kwargs) if method is None else (args, kwargs, method), False,
                            True, False, False)       # not simple: looked at above
        except Exception as e:
            raise TypeError("nanoray: could not serialize the arguments of the task: %s"
                            % _exc._safe_repr(e)) from e
        args_bytes = p.size
    if most and args_bytes > most:
        raise _ChunkTooBig()
    if args_bytes > INLINE_ARGS_MAX:
        args_ref = put_pickled(reg, p)
        args_bytes = 0
    if nret > reg.r.hdr.max_objects:
        raise ValueError("num_returns=%d is more than the object table holds (%d objects)"
                         % (nret, reg.r.hdr.max_objects))
    cdef uint32_t ndeps = 0 if deps is None else len(deps)
    cdef uint32_t ncont = 0 if args_ref is not None or p is None else len(p.contained)
    cdef uint32_t nheld = 0 if holds is None else 1
    cdef uint64_t size = sizeof(nr_spec_t) + 8 * (nret + ndeps + ncont + nheld) + args_bytes
    # A small spec is written here and copied into its block by the submit,
    # which allocates it in its own section; a larger one into its block.
    cdef uint64_t local[56]
    cdef uint64_t off = 0
    cdef nr_spec_t *spec = <nr_spec_t *>&local[0]
    if size > sizeof(local):
        off = _alloc(reg, size)
        spec = <nr_spec_t *>(reg.r.base + off)
    spec.func_id = func_id
    spec.args_obj = args_ref._id if args_ref is not None else 0
    spec.args_len = args_bytes
    spec.nret = nret
    spec.ndeps = ndeps
    spec.ncontained = ncont + nheld
    spec.kind = kind
    spec.parent = _parent_task()
    spec.stream_cell = 0
    spec.streamed = 0
    cdef uint64_t *ids = nr_spec_ids(spec)
    for i in range(ndeps):
        ids[nret + i] = (<ObjectRef>deps[i])._id
    for i in range(ncont):
        ids[nret + ndeps + i] = (<ObjectRef>p.contained[i])._id
    if nheld:
        ids[nret + ndeps + ncont] = holds._id
    cdef uint64_t rets_stack[8]
    cdef uint64_t *rets = &rets_stack[0]
    try:
        if p is None:
            _write_simple(nr_spec_args(spec), simple, sn)
        elif args_ref is None:
            _write_payload(nr_spec_args(spec), p, False)
        if nret > 8:
            rets = <uint64_t *>malloc(8 * nret)
            if rets == NULL:
                raise MemoryError()
    except BaseException:
        if off:
            nr_arena_free(&reg.r, off)        # the spec is not the task's yet
        raise
    cdef uint32_t t
    cdef int32_t resv[NR_RES]
    if res is not None:
        _fill_res(res, resv)
    cdef uint64_t env = 0
    if extras is not None and kind == NR_SPEC_TASK and not target:
        env = _env_key(extras.get("env"))
    try:
        t = 0
        if off == 0:
            t = nr_task_submit_copy(&reg.r, spec, size, cpus_milli, retries, target,
                                    resv if res is not None else NULL, pool, env, rets)
            if t == 0:                        # a table or the arena full: the way that
                off = _alloc(reg, size)       # spills to make room, or says what is full
                memcpy(reg.r.base + off, spec, size)
        if t == 0:
            t = nr_task_submit(&reg.r, off, cpus_milli, retries, target,
                               resv if res is not None else NULL, pool, env, rets)
        if t == 0:
            nr_arena_free(&reg.r, off)
            s = reg.stats()
            raise _exc.RaySystemError(
                "nanoray: no room for another task: %d tasks pending and %d objects alive "
                "(the tables hold %d tasks and %d objects). Release ObjectRefs you no "
                "longer need, or wait for results before submitting more."
                % (s["tasks"], s["objects"], reg.r.hdr.max_tasks, reg.r.hdr.max_objects))
        # The spec belongs to the task now (it may already have run and been
        # freed): the ids come from rets, written under the region lock.
        if nret == 0:
            return None
        if nret == 1:
            return _adopt(reg, rets[0])
        return [_adopt(reg, rets[i]) for i in range(nret)]
    finally:
        if rets != &rets_stack[0]:
            free(rets)
