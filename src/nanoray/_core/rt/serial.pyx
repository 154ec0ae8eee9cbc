# Serialization: values to payloads in the arena and back (pickle 5 with
# out-of-band buffers read in place), put, sealing results, and the errors
# a failed call's returns carry.
# Included by _runtime.pyx: one extension module, one concern per file.


cdef bint _plain(object v, int depth):
    """True when the C pickler is enough: builtins, plain numpy arrays, refs."""
    t = type(v)
    if (t is int or t is float or t is str or t is bytes or t is bool
            or v is None or t is complex or t is ObjectRef or t is _DepArg):
        return True
    if t is _ndarray:
        return not v.dtype.hasobject
    if depth == 0:
        return False
    if t is tuple or t is list:
        if len(v) > 256:
            return False
        for x in v:
            if not _plain(x, depth - 1):
                return False
        return True
    if t is dict:
        if len(v) > 256:
            return False
        for k, x in (<dict>v).items():
            if type(k) is not str or not _plain(x, depth - 1):
                return False
        return True
    return False


cdef class _Pickled:
    """A value pickled and measured, ready to be written as a payload."""


cdef inline uint64_t _align(uint64_t x):
    return (x + NR_ALIGN - 1) & ~(<uint64_t>NR_ALIGN - 1)


cdef object _function_pickler = None
# Reducers of the classes given to nanoray.util.register_serializer (by
# class), consulted by both picklers below (live: a ChainMap holds it).
cdef dict _reducers = {}
cdef object _value_pickler = None


def set_reducer(cls, reducer):
    """Pickles instances of cls with reducer(obj) -> (callable, args) from
    now on, in this process; reducer None: as before."""
    if reducer is None:
        _reducers.pop(cls, None)
    else:
        _reducers[cls] = reducer


cdef bytes _dumps_registered(value, buffer_callback):
    """cloudpickle with the registered reducers first."""
    global _value_pickler
    if _value_pickler is None:
        from collections import ChainMap
        cp = _cloud()

        class ValuePickler(cp.CloudPickler):
            dispatch_table = ChainMap(_reducers, cp.CloudPickler.dispatch_table)
        _value_pickler = ValuePickler
    import io
    buf = io.BytesIO()
    _value_pickler(buf, protocol=5, buffer_callback=buffer_callback).dump(value)
    return buf.getvalue()


cdef bytes _dumps_function(func):
    """cloudpickle, but code objects keep their real co_filename (cloudpickle
    3 writes "<dynamic-code>"), so remote tracebacks name the user's file and
    show its source lines."""
    global _function_pickler
    if _function_pickler is None:
        import io
        import types
        from collections import ChainMap
        cp = _cloud()
        base = cp.CloudPickler.dispatch_table.get(types.CodeType)

        def reduce_code(code):
            ctor, args = base(code)
            return ctor, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)

        class FunctionPickler(cp.CloudPickler):
            dispatch_table = ChainMap({types.CodeType: reduce_code} if base is not None else {},
                                      _reducers, cp.CloudPickler.dispatch_table)

        def dumps(f):
            buf = io.BytesIO()
            FunctionPickler(buf, protocol=5).dump(f)
            return buf.getvalue()
        _function_pickler = dumps
    return _function_pickler(func)


# Simple values (rt/simple.pyx) are written as their pickle streams
# directly; everything else through the C Pickler, or cloudpickle.
cdef _Pickled _pickle(object value, bint force_cloud, bint oob=True, bint function=False,
                      bint simple=True):
    """simple=False: the caller found value not simple already."""
    cdef _Pickled p = _Pickled.__new__(_Pickled)
    cdef bytes scalar
    if simple and not force_cloud and not function:
        scalar = _scalar_stream(value)
        if scalar is not None:
            p.data = scalar
            p.bufs = []
            p.contained = []
            p.size = 16 + len(scalar)
            return p
    cdef list bufs = []
    cdef object saved = getattr(_tls, "refs", None)
    cdef list found = []
    _tls.refs = found
    _check_ndarray()
    try:
        if function:
            p.data = _dumps_function(value)
        elif not force_cloud and _plain(value, 3):
            p.data = _pickle_dumps(value, 5, buffer_callback=bufs.append if oob else None)
        elif _reducers:
            p.data = _dumps_registered(value, bufs.append if oob else None)
        else:
            p.data = _cloud().dumps(value, 5, buffer_callback=bufs.append if oob else None)
    finally:
        p.contained = found
        _tls.refs = saved
    cdef uint64_t size = 16 + 8 * len(p.contained) + 16 * len(bufs) + len(p.data)
    p.bufs = []
    for b in bufs:
        m = b.raw()
        p.bufs.append(m)
        size = _align(size) + len(m)
    p.size = size
    return p


cdef void _write_payload(char *dst, _Pickled p, bint with_contained, list born=None,
                         char *base=NULL) except *:
    """Writes p at dst (NR_ALIGN-aligned when buffers are to be viewed).
    born: per buffer, the born block it lies in (0: copied here); those
    are referred to by region offset (from base), not copied."""
    cdef nr_payload_t *hdr = <nr_payload_t *>dst
    cdef uint32_t nc = len(p.contained) if with_contained else 0
    cdef uint32_t nb = len(p.bufs)
    hdr.nbufs = nb | (NR_PAYLOAD_EXTERN if born is not None else 0)
    hdr.ncontained = nc
    hdr.pickle_len = len(p.data)
    cdef uint64_t *ids = nr_payload_contained(hdr)
    cdef uint32_t i
    for i in range(nc):
        ids[i] = (<ObjectRef>p.contained[i])._id
    cdef uint64_t *table = ids + nc
    cdef uint64_t *blocks = table + 2 * nb
    cdef uint64_t off = 16 + 8 * nc + 16 * nb
    if born is not None:
        off += 8 * nb
    cdef nr_region_t *treg = &_region.r if _region is not None else NULL
    nr_prefault_touch(treg, dst + off, len(p.data))
    memcpy(dst + off, PyBytes_AS_STRING(p.data), len(p.data))
    off += len(p.data)
    cdef Py_buffer view
    cdef char *src
    cdef uint64_t n
    for i in range(nb):
        PyObject_GetBuffer(p.bufs[i], &view, PyBUF_SIMPLE)
        src = <char *>view.buf
        n = view.len
        if born is not None:
            blocks[i] = born[i]
            if born[i]:
                PyBuffer_Release(&view)
                table[2 * i] = <uint64_t>(src - base)
                table[2 * i + 1] = n
                continue
        off = _align(off)
        with nogil:
            nr_prefault_touch(treg, dst + off, n)   # maps pages the prefault thread made ready
            memcpy(dst + off, src, n)
        PyBuffer_Release(&view)
        table[2 * i] = off
        table[2 * i + 1] = n
        off += n


cdef inline void _write_simple(char *dst, const unsigned char *stream, int n) noexcept:
    """Writes a simple stream of n bytes (rt/simple.pyx) at dst as a payload:
    what _write_payload writes for it, without a _Pickled in between."""
    cdef nr_payload_t *hdr = <nr_payload_t *>dst
    hdr.nbufs = 0
    hdr.ncontained = 0
    hdr.pickle_len = n
    memcpy(dst + 16, stream, n)


cdef uint64_t _store_simple(Region reg, object value, uint64_t *size) except? 0:
    """Writes a simple value (rt/simple.pyx) straight into a new block:
    its offset, with its payload's bytes in size; 0 when value is not
    simple.  Raises what _alloc raises (the store full)."""
    cdef unsigned char buf[SIMPLE_MAX]
    cdef int n = _simple_into(value, buf)
    if n < 0:
        return 0
    cdef uint64_t off = _alloc(reg, 16 + n)
    _write_simple(reg.r.base + off, buf, n)
    size[0] = 16 + n
    return off


cdef list _born_refs(_Pickled p, uint64_t *size):
    """Which of p's buffers lie in born blocks of this process's arrays, each
    handed to the store (remapped copy-on-write here); None when none does.
    size: the payload's bytes with those referred to, not copied."""
    cdef Py_buffer view
    cdef uint64_t block, total
    cdef list born = None
    cdef dict handed = {}
    cdef Py_ssize_t i
    cdef int lazy = -1
    for i in range(len(p.bufs)):
        block = 0
        if len(p.bufs[i]) < _born_min:
            continue
        PyObject_GetBuffer(p.bufs[i], &view, PyBUF_SIMPLE)
        try:
            if nr_born_find(<char *>view.buf, view.len, &block):
                ok = handed.get(block)
                if ok is None:
                    if lazy < 0:
                        lazy = _born_lazy_now()
                    ok = handed[block] = nr_born_handoff(block, lazy) == 0
                if not ok:
                    block = 0
        finally:
            PyBuffer_Release(&view)
        if block:
            if born is None:
                born = [0] * len(p.bufs)
            born[i] = block
    if born is None:
        return None
    total = 16 + 8 * len(p.contained) + 24 * len(p.bufs) + len(p.data)
    for i in range(len(p.bufs)):
        if not born[i]:
            total = _align(total) + len(p.bufs[i])
    size[0] = total
    return born


cdef uint64_t _alloc(Region reg, uint64_t size) except 0:
    """A block of `size` bytes; spills objects to make room if need be."""
    cdef uint64_t off
    if size <= NR_SMALL_PAYLOAD:
        # A block from this process's cache, or a short section refilling
        # it: not worth releasing and taking the GIL around (the lock's
        # holders never wait for a GIL).
        off = nr_arena_alloc_small(&reg.r, size)
    else:
        with nogil:
            off = nr_arena_alloc_small(&reg.r, size)
    while off == 0:
        if nr_release_flush_all(&reg.r):  # small frees processes put off first
            with nogil:
                off = nr_arena_alloc(&reg.r, size)
            if off:
                break
        if size + 64 > reg.r.hdr.arena.end - reg.r.hdr.arena_off or not _spill_one(reg, size):
            s = reg.stats()
            raise _exc.ObjectStoreFullError(
                "nanoray: the object store is full: %d bytes requested, %d free at most "
                "(object_store_memory=%d, %d bytes in use, %d objects spilled to %s). What "
                "is left is held by arrays from get() that are still alive, by running "
                "tasks, by values holding refs, or by live numpy arrays workers made in the "
                "store (at most half of it), none of which can be spilled. Free refs "
                "you no longer need, or pass a larger object_store_memory to init()." % (
                    size, nr_arena_largest_free(&reg.r), s["store_capacity"], s["store_used"],
                    s["spilled_objects"], spill_dir(reg) or "(spilling off)"))
        with nogil:
            off = nr_arena_alloc(&reg.r, size)
    return off


cdef uint64_t _store(Region reg, _Pickled p) except 0:
    """Writes a payload into a new arena block; returns its offset.  Buffers
    of arrays born in the arena here are referred to, not copied (the
    object takes its count on their blocks when it is sealed)."""
    cdef list born = None
    cdef uint64_t size = p.size
    if _born_on and p.bufs:
        born = _born_refs(p, &size)
        if born is not None:
            p.size = size
    cdef uint64_t off = _alloc(reg, p.size)
    try:
        _write_payload(reg.r.base + off, p, True, born, reg.r.base)
    except BaseException:
        nr_arena_free(&reg.r, off)
        raise
    return off


cdef object _load(Region reg, uint64_t oid, char *ptr, bint copy, bint cow=False):
    """Rebuilds a value from a payload; buffers are pinned views unless copy
    (then read-only copies), or cow (writable copy-on-write views)."""
    cdef nr_payload_t *hdr = <nr_payload_t *>ptr
    cdef uint32_t nb = nr_payload_nbufs(hdr)
    cdef uint64_t *table = nr_payload_contained(hdr) + hdr.ncontained
    cdef uint64_t *blocks = nr_payload_blocks(hdr)      # buffers in born blocks, or NULL
    cdef char *stream = <char *>(table + (3 if blocks != NULL else 2) * nb)
    if nb == 0 and hdr.pickle_len <= SIMPLE_MAX:
        v = _scalar_load(<const unsigned char *>stream, hdr.pickle_len)
        if v is not _NOT_SCALAR:
            return v
    data = PyMemoryView_FromMemory(stream, hdr.pickle_len, PyBUF_READ)
    if nb == 0:
        return _pickle_loads(data)
    cdef list bufs = []
    cdef uint32_t i
    cdef char *at
    for i in range(nb):
        at = ptr + table[2 * i]
        if blocks != NULL and blocks[i]:
            at = reg.r.base + table[2 * i]             # a region offset
            if _born_on and nr_born_hidden(table[2 * i], table[2 * i + 1]):
                # This process maps those pages privately (an array of its
                # own, handed off and perhaps written since): read the
                # store's bytes through a shared mapping of their own.
                view = memoryview(_cow(reg, oid, at, table[2 * i + 1], not cow, True))
                bufs.append(bytes(view) if copy and not cow else view)
                continue
        if cow:
            bufs.append(memoryview(_cow(reg, oid, at, table[2 * i + 1])))
        elif copy:
            # an immutable copy: arrays come out read-only, as large ones do
            bufs.append(bytes(PyMemoryView_FromMemory(at, table[2 * i + 1], PyBUF_READ)))
        else:
            bufs.append(memoryview(_pin(reg, oid, at, table[2 * i + 1])))
    return _pickle_loads(data, buffers=bufs)


cdef object _value(Region reg, uint64_t oid, bint *is_error, bint cow=False):
    """The value of a sealed object (an exception instance if it failed).
    Its payload is pinned while it is read (restored first if spilled)."""
    cdef int st = 0
    cdef uint64_t data = _pin_payload(reg, oid, &st)
    if st < 0:
        raise _exc.ObjectLostError("nanoray: object %016x is gone (freed or never existed)" % oid)
    is_error[0] = st == NR_OBJ_ERROR
    if data == 0:                      # no payload, so no pin taken
        is_error[0] = True
        return _exc.RaySystemError("nanoray: the task failed and its error could not be "
                                   "stored, or the process that was to store this value died "
                                   "first (a worker killed mid-stream, or cancel(force=True))")
    try:
        return _load(reg, oid, reg.r.base + data, False, cow)
    except Exception as e:
        if st != NR_OBJ_ERROR:
            raise
        return _exc.RaySystemError("nanoray: the task failed, and its error could not be "
                                   "deserialized here: %s" % _exc._safe_repr(e))
    finally:
        nr_object_unpin(&reg.r, oid)


cdef object _table_full(Region reg):
    """The error when every entry of the object table is taken."""
    return _exc.ObjectStoreFullError(
        "nanoray: the object table is full: %d objects are alive, as many as it holds. "
        "Release ObjectRefs you no longer need, or get results before submitting more."
        % reg.r.hdr.max_objects)


cdef ObjectRef put_pickled(Region reg, _Pickled p, bint pinned=False):
    """Stores a pickled value as a new sealed object; returns its ref.
    pinned: never spilled (a payload the C layer reads itself)."""
    cdef uint64_t off = _store(reg, p)
    cdef uint64_t oid = nr_put_pinned(&reg.r, off, p.size) if pinned else nr_put(&reg.r, off, p.size)
    if oid == 0:
        nr_arena_free(&reg.r, off)
        raise _table_full(reg)
    return _adopt(reg, oid)


def put(value):
    cdef Region reg = _running()
    if type(value) is ObjectRef:
        raise TypeError("Calling put() on an ObjectRef is not allowed: it is already in the store")
    cdef uint64_t size, oid
    cdef uint64_t off = _store_simple(reg, value, &size)
    if off == 0:
        return put_pickled(reg, _pickle(value, False, True, False, False))
    oid = nr_put(&reg.r, off, size)
    if oid == 0:
        nr_arena_free(&reg.r, off)
        raise _table_full(reg)
    return _adopt(reg, oid)


cdef bint _seal(Region reg, uint64_t oid, object value, bint is_error, str name="",
                bint simple=True) except -1:
    """Stores value as the object's result.  If the value cannot be pickled
    or stored, the object is sealed with that error instead: a pending
    object is never left behind (its getters would wait forever).
    simple=False: the caller found value not simple (or not storable so).
    True when it sealed a failure that no ref held and nobody had seen
    (nr_object_seal's 2): the caller reports it."""
    cdef _Pickled p
    cdef uint64_t off = 0, size
    if simple and not is_error:        # a simple value: straight into its block
        try:
            off = _store_simple(reg, value, &size)
        except Exception:
            off = 0                    # the way below seals the store's error
        if off:
            if nr_object_seal(&reg.r, oid, off, size, False) != 0:
                nr_arena_free(&reg.r, off)
            return False
    err = None                         # the store's own error, if it seals one instead
    try:
        p = _pickle(value, is_error, True, False, False)
        off = _store(reg, p)
    except Exception as e:
        if isinstance(e, _exc.ObjectStoreFullError):
            cause = e                  # catchable as ObjectStoreFullError by the caller
        else:
            # As Ray: the pickling error's own type (a TypeError, mostly), so
            # `except TypeError` sees it; the message says where it came from.
            msg = "nanoray: the result of %s() could not be serialized: %s" % (
                name, _exc._safe_repr(e))
            cause = (type(e)(msg) if type(e) in (TypeError, AttributeError, ValueError,
                                                  pickle.PicklingError)
                     else _exc.RaySystemError(msg))
        err = _exc.RayTaskError(name, "", cause, os.getpid())
        try:
            p = _pickle(err, True)
            off = _store(reg, p)
        except Exception:
            off = 0                    # sealed with no payload: read back as a system error
        is_error = True
    cdef int rc = nr_object_seal(&reg.r, oid, off, p.size if off else 0, is_error)
    if (rc == 1 or rc < 0) and off:
        nr_arena_free(&reg.r, off)     # not sealed with it (2: freed with the object)
    if rc == 2 and err is not None:    # its own error, which no ref can see: reported here
        report_unhandled(err)
        return False
    return rc == 2


def put_error(err):
    """A new object holding err as an error: its get raises it."""
    cdef Region reg = _running()
    cdef uint64_t oid = nr_object_create(&reg.r)
    if oid == 0:
        raise _table_full(reg)
    ref = _adopt(reg, oid)
    _seal(reg, oid, err, True)
    return ref


def seal_error(uint64_t oid, err):
    """Seals a pending object with an error (used when a task cannot run).
    True when no ref held it and nobody saw it: the caller reports it."""
    return _seal(_region, oid, err, True)


cdef void _seal_failure(Region reg, uint64_t oid, failure, str name) except *:
    """Seals oid with failure (a stand-in when it will not pickle or rebuild)."""
    cdef _Pickled p
    try:
        p = _pickle(failure, True)
        _pickle_loads(p.data, buffers=p.bufs)     # the getter must be able to rebuild it
    except Exception:
        # The cause will not pickle or rebuild (e.g. an __init__ that needs
        # other arguments): keep its traceback text and repr.
        if isinstance(failure, _exc.RayTaskError):
            failure = _exc.RayTaskError(failure.function_name, failure.traceback_str, None,
                                        failure.pid, cause_repr=_exc._safe_repr(failure.cause))
        else:
            failure = _exc.RaySystemError(_exc._safe_repr(failure))
    # No ref left to it at the seal (a task's result nobody kept): nobody
    # can see this failure, so it is reported here (rt/refs.pyx).
    if _seal(reg, oid, failure, True, name):
        report_unhandled(failure)


cdef object _failure_of(BaseException e, str name):
    """The error a failed call's returns carry."""
    aio = sys.modules.get("asyncio")
    if isinstance(e, KeyboardInterrupt) or (aio is not None and isinstance(e, aio.CancelledError)):
        return _exc.TaskCancelledError(
            error_message="nanoray: task %s() was cancelled (interrupted while running)" % name)
    _exc._note_read_only(e)              # a write to an argument: how to make it writable
    if isinstance(e, _exc.RayTaskError):
        # A task it waited on failed: keep that cause; the traceback shows
        # this task's frames, then the inner task's.
        return _exc.RayTaskError(name, _format_tb(e), e.cause, os.getpid(),
                                 cause_repr=e.cause_repr)
    return _exc.RayTaskError(name, _format_tb(e), e, os.getpid())


cdef object _failed_arg(object v, str name):
    """The failure of a task whose argument failed with v: a task's error
    names this task too, as Ray's does (the original type still catches)."""
    if isinstance(v, _exc.RayTaskError):
        text = str(v).replace("\n", "\n  ")
        return _exc.RayTaskError(
            name, "  At least one of the input arguments for this task could not be "
            "computed:\n  " + text, v.cause, os.getpid(), v.cause_repr).as_instanceof_cause()
    return v
