# ObjectRef and the other small objects that hold counts in the region:
# _DepArg (where a top-level ref argument's value goes) and _PinnedBuffer
# (a read-only view of store memory that pins its object).
# Included by _runtime.pyx: one extension module, one concern per file.


# no_gc: a ref holds only its Region, and a Region refers to no Python
# object, so no cycle runs through a ref: the cyclic collector need not
# track refs at all (a program holding a million refs would otherwise have
# each collection walk them, and making refs would trigger collections).
@cython.no_gc
@cython.freelist(256)                 # refs come and go by the thousand: no malloc each
cdef class ObjectRef:
    """A future for a value in the object store, as in Ray.

    Each instance holds one count on its object in the shared table; the
    value is freed when no ref, task or view in any process holds it."""

    def __init__(self, binary=None, *args, **kwargs):
        # ObjectRef(ref.binary()), as Ray allows: a ref out of band (an id
        # passed as bytes), counted like any other while its object lives.
        if type(binary) is not bytes or len(binary) != 8 or args or kwargs:
            raise TypeError("ObjectRefs are made by put() and .remote(), or from another "
                            "ref's 8-byte id: ObjectRef(ref.binary()) (on the Ray backend, "
                            "ray.ObjectRef makes Ray's)")
        cdef Region reg = _running()
        cdef uint64_t oid = int.from_bytes(binary, "big")   # as binary() writes it
        if self._reg is not None:
            raise TypeError("this ObjectRef is already made")
        cdef nr_object_t *o = nr_object_lookup(&reg.r, oid)
        if o != NULL and o.actor:         # an actor's handle count: not a value to get
            raise ValueError("nanoray: %s is an actor's id, not an object's" % binary.hex())
        if not nr_object_try_incref(&reg.r, oid, 0):
            raise _exc.ObjectFreedError(
                "nanoray: no object with id %s is alive (freed, or from another runtime)"
                % binary.hex())
        self._id = oid
        self._reg = reg

    def __dealloc__(self):
        cdef bint report
        if self._reg is not None and self._reg.pid == _pid:
            # Only while its runtime runs: not for refs dropped after
            # shutdown() (at the interpreter's exit, say), as in Ray.
            report = not self._seen and self._reg is _region
            if report and self._reg.r.hdr.errors:
                _unhandled_if_last(self._reg, self._id)
            # A small value's free waits for this process's next section
            # (csrc/nr_sched.h): the GIL makes this thread the one producer.
            # A failure sealed since the look above, and left unseen, comes
            # back to be reported (the worker saw this count at its seal).
            if nr_object_release(&self._reg.r, self._id, report):
                _report_last(self._reg, self._id)
                nr_object_release(&self._reg.r, self._id, 0)

    def hex(self):
        return format(self._id, "016x")

    def binary(self):
        return self._id.to_bytes(8, "big")     # as Ray's: binary().hex() == hex()

    def is_nil(self):
        return self._id == 0

    def job_id(self):
        """The runtime's job id (as get_runtime_context().get_job_id(); .hex() too)."""
        return HexId("%08x" % ((self._reg.session if self._reg is not None else 0) & 0xFFFFFFFF))

    def __repr__(self):
        return "ObjectRef(" + self.hex() + ")"

    def __hash__(self):
        return hash(self._id)

    def __eq__(self, other):
        return (type(other) is ObjectRef and (<ObjectRef>other)._id == self._id
                and (<ObjectRef>other)._reg is self._reg)

    def __ne__(self, other):
        return not self.__eq__(other)

    def __reduce__(self):
        # Only refs of the running runtime are counted by the payload; a
        # ref of another (shut down) runtime stays dead when rebuilt.
        if self._reg is not None and self._reg is _region:
            refs = getattr(_tls, "refs", None)
            if refs is not None:
                refs.append(self)
            elif self._reg.pid == _pid:
                # Out of band (nanoray.cloudpickle, pickle.dumps): no payload
                # counts it, so, as in Ray, the object is kept for the life of
                # this process (its ledger gives the count back when it ends).
                nr_object_incref(&self._reg.r, self._id)
        return (_rebuild_ref, (self._id, self._reg.session if self._reg is not None else 0))

    def __copy__(self):
        return self                        # immutable: no pickling, no count taken

    def __deepcopy__(self, memo):
        return self

    def __await__(self):
        return _await_ref(self).__await__()

    def future(self):
        """A concurrent.futures.Future resolved with the value (or the error).
        One watcher thread per process serves every pending future and await."""
        import concurrent.futures
        fut = _ref_future_class()()

        def resolve(ref):
            try:
                try:
                    value = get_one(ref, None)
                except BaseException as e:
                    fut.set_exception(e)
                else:
                    fut.set_result(value)
            except concurrent.futures.InvalidStateError:
                pass                       # cancelled meanwhile
        _watch(self, resolve)
        return fut

    def as_future(self):
        """An asyncio future of the value (Ray's older API; await ref, or
        asyncio.wrap_future(ref.future()), is the same)."""
        import asyncio
        return asyncio.wrap_future(self.future())


class HexId(str):
    """An id as the hex str it is, with Ray's ID methods (.hex(), .binary(),
    .is_nil()), where Ray returns ID objects (ctx.job_id, ref.job_id())."""

    def hex(self):
        return str(self)

    def binary(self):
        return bytes.fromhex(self)

    def is_nil(self):
        return set(self) <= {"f"}


cdef inline ObjectRef _adopt(Region reg, uint64_t oid):
    """Wraps an id whose count the caller already took."""
    cdef ObjectRef ref = ObjectRef.__new__(ObjectRef)
    ref._id = oid
    ref._reg = reg
    return ref


cdef inline ObjectRef _new_ref(Region reg, uint64_t oid):
    nr_object_incref(&reg.r, oid)
    return _adopt(reg, oid)


def _rebuild_ref(uint64_t oid, uint64_t session=0):
    if _region is None:
        raise _exc.RaySystemError("an ObjectRef was unpickled outside a nanoray runtime")
    if session != _region.session:
        # From a runtime that was shut down: a dead ref, whose get() says so.
        ref = ObjectRef.__new__(ObjectRef)
        (<ObjectRef>ref)._id = oid
        return ref
    return _new_ref(_region, oid)


def quiet(ref, bint everywhere=False):
    """Marks ref as seen: a failure it holds is not reported when it is
    dropped (a ref the runtime keeps for the user, such as a stream's
    completion); everywhere: nor when another instance of it is, in any
    process (also when it has not failed yet)."""
    if type(ref) is ObjectRef:
        if everywhere:
            _mark_seen(<ObjectRef>ref, True)
        else:
            (<ObjectRef>ref)._seen = True


cdef void _mark_seen(ObjectRef ref, bint pending_too=False) noexcept:
    """ref's failure was raised or handed back to the user: not reported
    when this instance is dropped, nor when another one is, in any process
    (a copy unpickled from a container, an actor's)."""
    ref._seen = True
    if ref._reg is not None and ref._reg.pid == _pid:
        nr_object_mark_seen(&ref._reg.r, ref._id, pending_too)


cdef void _unhandled_if_last(Region reg, uint64_t oid) noexcept:
    """A failed object whose last count goes with a ref nobody got it
    through: its error is reported on stderr, as Ray does ("Unhandled
    error"), so that a task whose result is never fetched does not fail
    silently.  Its worker reports it instead when no ref was left by the
    time it failed (report_unhandled)."""
    cdef nr_object_t *o = nr_object_lookup(&reg.r, oid)
    if o == NULL or o.state != NR_OBJ_ERROR or o.waiters & NR_WAIT_SEEN:
        return                            # not failed, or seen elsewhere
    if o.refs != 1:
        # Not the last ref, unless a free this process put off holds one
        # (a stream's cell holds its failed item): those go first.
        nr_release_flush(&reg.r)
        if o.refs != 1:
            return
    nr_object_mark_seen(&reg.r, oid, 0)   # the release after this one frees it
    _report_last(reg, oid)


cdef void _report_last(Region reg, uint64_t oid) noexcept:
    cdef bint is_error = False
    try:
        value = _value(reg, oid, &is_error)
        if is_error:
            report_unhandled(value)
    except BaseException:
        pass


def report_unhandled(error):
    """Writes a failure nobody fetched to stderr (not a cancel's, not once
    the runtime is shutting down, and not with RAY_IGNORE_UNHANDLED_ERRORS
    set)."""
    if isinstance(error, _exc.TaskCancelledError) or "RAY_IGNORE_UNHANDLED_ERRORS" in os.environ:
        return
    if _region is None or _region.r.hdr.shutdown:
        return                            # failures of the shutdown itself (calls it cut short)
    try:
        sys.stderr.write("Unhandled error (suppress with 'RAY_IGNORE_UNHANDLED_ERRORS=1'): %s\n"
                         % (error,))
        sys.stderr.flush()
    except Exception:
        pass


cdef class _DepArg:
    """Marks where a top-level ObjectRef argument's value goes."""

    def __init__(self, int i):
        self.i = i

    def __reduce__(self):
        return (_DepArg, (self.i,))


@cython.no_gc_clear
cdef class _PinnedBuffer:
    """A read-only buffer over region memory that pins its object."""

    def __dealloc__(self):
        if self.reg is not None and self.reg.pid == _pid:
            nr_object_unpin(&self.reg.r, self.oid)
            nr_object_decref(&self.reg.r, self.oid)

    def __getbuffer__(self, Py_buffer *view, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError(
                "nanoray: objects in the store are read-only; for a writable view that "
                "copies only what you change, use nanoray.get(ref, writable=True) (or "
                "@remote(writable_args=True) for a task's arguments), or copy the value "
                "(x.copy())")
        view.obj = self
        _bytes_view(view, self.ptr, self.size, self.shape, self.strides, True)

    def __releasebuffer__(self, Py_buffer *view):
        pass


cdef inline void _bytes_view(Py_buffer *view, char *ptr, Py_ssize_t size, Py_ssize_t *shape,
                             Py_ssize_t *strides, bint readonly) noexcept:
    """Fills view for `size` bytes at ptr, one dimension (view.obj is set by
    the caller)."""
    shape[0] = size
    strides[0] = 1
    view.buf = ptr
    view.len = size
    view.readonly = readonly
    view.itemsize = 1
    view.format = "B"
    view.ndim = 1
    view.shape = shape
    view.strides = strides
    view.suboffsets = NULL
    view.internal = NULL


cdef inline _PinnedBuffer _pin(Region reg, uint64_t oid, char *ptr, Py_ssize_t size):
    cdef _PinnedBuffer b = _PinnedBuffer.__new__(_PinnedBuffer)
    cdef uint64_t data, nbytes, file
    cdef uint32_t spill
    nr_object_incref(&reg.r, oid)
    # The payload is pinned while it is loaded, so it is in memory: this pin
    # keeps it there (never spilled) for the life of the view.
    nr_object_pin(&reg.r, oid, &data, &nbytes, &spill, &file)
    b.reg = reg
    b.oid = oid
    b.ptr = ptr
    b.size = size
    return b


@cython.no_gc_clear
cdef class _CowBuffer:
    """A writable, copy-on-write view of an object's bytes (get(writable=True)):
    the memfd range mapped privately, so reading costs nothing, only the
    pages written are copied, and the writes are this process's alone.  It
    keeps its object counted and pinned: the pages it has not written read
    through to the store, which must not change under them."""

    def __dealloc__(self):
        if self.base != NULL:
            munmap(self.base, self.length)
        if self.reg is not None and self.reg.pid == _pid:
            nr_object_unpin(&self.reg.r, self.oid)
            nr_object_decref(&self.reg.r, self.oid)

    def __getbuffer__(self, Py_buffer *view, int flags):
        view.obj = self
        _bytes_view(view, self.ptr, self.size, self.shape, self.strides, self.readonly)

    def __releasebuffer__(self, Py_buffer *view):
        pass


# Below this many bytes a writable view is a copy: copying costs about what
# mapping would, and each mapping is one of the process's vm.max_map_count
# (65530 by default), which many small arrays would use up.
cdef enum:
    _COW_MIN_BYTES = 65536


cdef object _cow(Region reg, uint64_t oid, char *ptr, Py_ssize_t size, bint shared=False,
                 bint hidden=False):
    """A writable view of size bytes at ptr: a private mapping of that range
    of the memfd, or, without the fd or for a small range, a copy.  shared:
    a read-only view, a second shared mapping of the range.  hidden: this
    process maps the range privately (an array born in the arena, handed
    off; rt/born.pyx), so the store's bytes are read through a mapping of
    the memfd, never copied from ptr."""
    cdef uint64_t data, nbytes, file
    cdef uint32_t spill
    cdef uint64_t off = <uint64_t>(ptr - reg.r.base)
    cdef uint64_t start = off & ~(<uint64_t>4095)
    cdef size_t length = <size_t>((off - start + size + 4095) & ~(<uint64_t>4095))
    if reg.r.fd < 0 or size == 0 or (size < _COW_MIN_BYTES and not shared and not hidden):
        return bytearray(PyMemoryView_FromMemory(ptr, size, PyBUF_READ))
    cdef void *m
    if shared:
        m = mmap(NULL, length, PROT_READ, MAP_SHARED, reg.r.fd, start)
    else:
        m = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE, reg.r.fd, start)
    if m == MAP_FAILED:
        if shared:
            raise MemoryError("nanoray: could not map an object's pages")
        return bytearray(PyMemoryView_FromMemory(ptr, size, PyBUF_READ))
    cdef _CowBuffer b = _CowBuffer.__new__(_CowBuffer)
    nr_object_incref(&reg.r, oid)
    nr_object_pin(&reg.r, oid, &data, &nbytes, &spill, &file)
    b.reg = reg
    b.oid = oid
    b.base = <char *>m
    b.length = length
    b.ptr = <char *>m + (off - start)
    b.size = size
    b.readonly = shared
    return b


cdef object _writable(Region reg, uint64_t oid, object np, object v):
    """v, if a read-only array, made writable: a copy-on-write view when it lies
    in object oid's payload (any strides, through its byte bounds), else a
    copy (writable_args for arrays passed by value: rt/worker.pyx)."""
    if not isinstance(v, np.ndarray) or v.flags.writeable:
        return v
    cdef uintptr_t base = <uintptr_t>reg.r.base
    cdef uintptr_t lo, hi, at
    if oid and type(v) is np.ndarray and v.size:
        bounds = getattr(getattr(np, "lib", None), "array_utils", None)
        lo, hi = (bounds.byte_bounds if bounds is not None else np.byte_bounds)(v)
        at = v.__array_interface__["data"][0]
        if base <= lo and hi <= base + reg.r.size:      # in the argument object's payload
            buf = _cow(reg, oid, <char *>lo, hi - lo)
            return np.ndarray(v.shape, v.dtype, buffer=buf, offset=at - lo, strides=v.strides)
    return v.copy(order="K")
