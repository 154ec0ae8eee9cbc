# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled runtime: region handle, ObjectRef, serialization, submit,
get/put/wait, and the worker loop.

Serialization (what crosses the region)
---------------------------------------
A value becomes a *payload* in one arena block::

    nr_payload_t | contained ids | {off, len} per buffer | pickle | buffers

The pickle stream is pickle protocol 5 with out-of-band buffers, so numpy
arrays' data is copied once into the arena by put and never again: get
rebuilds arrays as read-only views of the block.  Each view holds a
_PinnedBuffer that keeps a count on the object, so the block lives as long
as any view does.  Values made only of builtins and plain numpy arrays go
through the C pickler; anything else (functions, classes and instances from
__main__, lambdas) through cloudpickle, which pickles those by value.

Refs nested in a value are collected while pickling (ObjectRef.__reduce__)
and listed in the payload; the region keeps a count on each for as long as
the payload lives, so a ref inside a value can never dangle.

Task arguments are one payload: inline in the task spec when small (copied
out in the worker as immutable bytes), or an object of its own when larger
than INLINE_ARGS_MAX (read in place by the worker); either way array
arguments are read-only, as in Ray.  Functions are pickled in band, with
their source file names kept, so arrays they capture arrive in each worker
as its own writable copy and remote tracebacks show the user's source.  Top-level ObjectRef
arguments are replaced by _DepArg markers and listed as dependencies: the
task is queued only once they are sealed, and the worker substitutes their
values.
"""

import os
import pickle
import sys
import threading
import traceback

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_AS_STRING
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.exc cimport PyErr_CheckSignals
from libc.stdint cimport uint8_t, uint32_t, int32_t, uint64_t, int64_t
from libc.string cimport memcpy
from libc.stdlib cimport malloc, free
from posix.unistd cimport close, getpid

from nanoray._core.region cimport *
from nanoray._core.arena cimport *
from nanoray._core.sched cimport *

cdef extern from "Python.h":
    enum:
        PyBUF_READ

cdef extern from "<sys/prctl.h>" nogil:
    int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)
    enum:
        PR_SET_PDEATHSIG

from nanoray import exceptions as _exc

# Arguments whose pickled size is above this become an object of their own
# and are read in place by the worker; below it they ride inline in the task
# spec (one allocation, copied out).  Ray uses the same 100 KiB bound.
INLINE_ARGS_MAX = 100 * 1024

# How long a waiting process spins before sleeping on a futex.  A futex
# wake-up costs ~23 us on the development VM; a spin round trip ~0.1 us.
# Workers spin longer than getters: in a pipelined burst the next task
# usually arrives within a few microseconds.
GET_SPIN_NS = int(os.environ.get("NANORAY_GET_SPIN_US", "50")) * 1000
WORKER_SPIN_NS = int(os.environ.get("NANORAY_WORKER_SPIN_US", "100")) * 1000
# A pool worker beyond num_cpus (started for nested tasks) retires after
# this long idle, so a burst of nesting does not leave processes behind.
IDLE_RETIRE_NS = 10 * 1000 * 1000 * 1000
# Long waits wake this often to handle signals (Ctrl-C) and to notice a dead
# runtime (e.g. the zygote was killed).
WAIT_SLICE_NS = 100 * 1000 * 1000

cdef object _cloudpickle = None
cdef object _ndarray = None
cdef object _pickle_dumps = pickle.dumps
cdef object _pickle_loads = pickle.loads

# Per-process state.
cdef Region _region = None        # the region this process uses now
cdef uint32_t _slot = 0           # this process's proc slot
cdef bint _in_task = False        # a worker running a task (get() lends CPUs)
cdef unsigned long _task_seq = 1  # bumped as each task ends; tags its waiters
cdef int _waiters = 0             # threads of the running task waiting (CPUs lent while > 0)
cdef int _timed_waiters = 0       # those of them with a timeout
cdef object _tls = threading.local()  # .refs: refs met while pickling (per thread)
cdef int _pid = getpid()         # this process; refs inherited by a fork are inert
cdef dict _funcs = {}             # function object id -> callable (workers)
_liveness_check = None            # driver: callable raising if the runtime died


cdef _cloud():
    global _cloudpickle
    if _cloudpickle is None:
        import cloudpickle
        _cloudpickle = cloudpickle
    return _cloudpickle


cdef inline void _check_ndarray():
    global _ndarray
    if _ndarray is None:
        np = sys.modules.get("numpy")
        if np is not None:
            _ndarray = np.ndarray


# --------------------------------------------------------------------------
# Region


cdef class Region:
    """This process's mapping of the shared region.

    The mapping stays until the last Region reference is gone, so arrays and
    refs that outlive shutdown() still point at mapped memory."""
    cdef nr_region_t r
    cdef int pid                      # the process whose counts it may change
    cdef readonly uint64_t session    # random per runtime: a ref from another is dead
    cdef object __weakref__

    def __cinit__(self):
        self.r.base = NULL
        self.r.fd = -1
        self.r.spawn_fd = -1
        self.pid = _pid

    @staticmethod
    def create(uint64_t arena_bytes, int32_t cpus_milli, uint32_t min_workers,
               uint32_t max_workers, uint32_t max_procs=1024,
               uint32_t max_objects=1 << 20, uint32_t max_tasks=1 << 20,
               uint32_t max_deps=1 << 21):
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

    def shutdown(self):
        nr_shutdown(&self.r)

    def is_shut_down(self):
        return self.r.hdr.shutdown != 0

    def stats(self):
        cdef nr_stats_t s
        nr_stats(&self.r, &s)
        return dict(objects=s.nobjects, tasks=s.ntasks, queued=s.rq_len,
                    workers=s.nworkers, idle=s.nidle, blocked=s.nblocked,
                    sleeping=s.nsleeping, spinning=s.nspinning, starting=s.nstarting,
                    max_workers=s.max_workers,
                    cpus_total=s.cpus_total / 1000.0, cpus_available=s.cpus_avail / 1000.0,
                    store_used=s.arena_used, store_allocations=s.arena_nallocs,
                    store_touched=s.arena_peak, store_capacity=s.arena_size,
                    lock_repairs=s.repairs)

    def arena_check(self):
        """0 when the allocator's invariants hold, else which one broke."""
        nr_lock(&self.r)
        rc = nr_arena_check(&self.r)
        nr_unlock(&self.r)
        return rc


def _after_fork_in_child():
    global _pid
    _pid = getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)


def current_region():
    return _region


def set_process_state(Region region, uint32_t slot):
    """Makes `region` this process's runtime (driver at init, workers at start)."""
    global _region, _slot, _funcs
    _region = region
    _slot = slot
    _funcs = {}
    if region is not None:
        region.r.slot = slot
        region.pid = _pid


def drop_function_cache():
    """Forgets the functions this worker loaded, releasing the refs they hold."""
    global _funcs
    _funcs = {}


def set_liveness_check(check):
    global _liveness_check
    _liveness_check = check


# --------------------------------------------------------------------------
# ObjectRef


cdef class ObjectRef:
    """A future for a value in the object store, as in Ray.

    Each instance holds one count on its object in the shared table; the
    value is freed when no ref, task or view in any process holds it."""
    cdef readonly uint64_t _id
    cdef Region _reg

    def __init__(self, *args, **kwargs):
        raise TypeError("ObjectRefs are made by put() and .remote(), not directly")

    def __dealloc__(self):
        if self._reg is not None and self._reg.pid == _pid:
            nr_object_decref(&self._reg.r, self._id)

    def hex(self):
        return format(self._id, "016x")

    def binary(self):
        return self._id.to_bytes(8, "little")

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
        return (_rebuild_ref, (self._id, self._reg.session if self._reg is not None else 0))

    def __await__(self):
        import asyncio
        return asyncio.wrap_future(self.future()).__await__()

    def future(self):
        """A concurrent.futures.Future resolved with the value."""
        import concurrent.futures
        import threading
        fut = concurrent.futures.Future()
        ref = self

        def waiter():
            try:
                try:
                    value = get((ref,), None)[0]
                except BaseException as e:
                    fut.set_exception(e)
                else:
                    fut.set_result(value)
            except concurrent.futures.InvalidStateError:
                pass                       # cancelled meanwhile (e.g. asyncio.wait_for)
        threading.Thread(target=waiter, daemon=True).start()
        return fut


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


cdef class _DepArg:
    """Marks where a top-level ObjectRef argument's value goes."""
    cdef public int i

    def __init__(self, int i):
        self.i = i

    def __reduce__(self):
        return (_DepArg, (self.i,))


cdef class _PinnedBuffer:
    """A read-only buffer over region memory that pins its object."""
    cdef Region reg
    cdef uint64_t oid
    cdef char *ptr
    cdef Py_ssize_t size
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]

    def __dealloc__(self):
        if self.reg is not None and self.reg.pid == _pid:
            nr_object_decref(&self.reg.r, self.oid)

    def __getbuffer__(self, Py_buffer *view, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError(
                "nanoray: objects in the store are read-only; copy the value "
                "(e.g. numpy.array(x) or x.copy()) to get a writable one")
        self.shape[0] = self.size
        self.strides[0] = 1
        view.buf = self.ptr
        view.obj = self
        view.len = self.size
        view.readonly = 1
        view.itemsize = 1
        view.format = "B"
        view.ndim = 1
        view.shape = self.shape
        view.strides = self.strides
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer *view):
        pass


cdef inline _PinnedBuffer _pin(Region reg, uint64_t oid, char *ptr, Py_ssize_t size):
    cdef _PinnedBuffer b = _PinnedBuffer.__new__(_PinnedBuffer)
    nr_object_incref(&reg.r, oid)
    b.reg = reg
    b.oid = oid
    b.ptr = ptr
    b.size = size
    return b


# --------------------------------------------------------------------------
# Serialization


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
    cdef bytes data
    cdef list bufs            # memoryviews, each C-contiguous bytes
    cdef list contained       # ObjectRefs met while pickling
    cdef uint64_t size        # payload bytes


cdef inline uint64_t _align(uint64_t x):
    return (x + NR_ALIGN - 1) & ~(<uint64_t>NR_ALIGN - 1)


cdef object _function_pickler = None


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
            if base is not None:
                dispatch_table = ChainMap({types.CodeType: reduce_code},
                                          cp.CloudPickler.dispatch_table)

        def dumps(f):
            buf = io.BytesIO()
            FunctionPickler(buf, protocol=5).dump(f)
            return buf.getvalue()
        _function_pickler = dumps
    return _function_pickler(func)


cdef _Pickled _pickle(object value, bint force_cloud, bint oob=True, bint function=False):
    cdef _Pickled p = _Pickled.__new__(_Pickled)
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


cdef void _write_payload(char *dst, _Pickled p, bint with_contained) except *:
    """Writes p at dst (NR_ALIGN-aligned when buffers are to be viewed)."""
    cdef nr_payload_t *hdr = <nr_payload_t *>dst
    cdef uint32_t nc = len(p.contained) if with_contained else 0
    cdef uint32_t nb = len(p.bufs)
    hdr.nbufs = nb
    hdr.ncontained = nc
    hdr.pickle_len = len(p.data)
    cdef uint64_t *ids = nr_payload_contained(hdr)
    cdef uint32_t i
    for i in range(nc):
        ids[i] = (<ObjectRef>p.contained[i])._id
    cdef uint64_t *table = ids + nc
    cdef uint64_t off = 16 + 8 * nc + 16 * nb
    memcpy(dst + off, PyBytes_AS_STRING(p.data), len(p.data))
    off += len(p.data)
    cdef Py_buffer view
    cdef char *src
    cdef uint64_t n
    for i in range(nb):
        off = _align(off)
        PyObject_GetBuffer(p.bufs[i], &view, PyBUF_SIMPLE)
        src = <char *>view.buf
        n = view.len
        with nogil:
            memcpy(dst + off, src, n)
        PyBuffer_Release(&view)
        table[2 * i] = off
        table[2 * i + 1] = n
        off += n


cdef uint64_t _alloc(Region reg, uint64_t size) except 0:
    cdef uint64_t off
    with nogil:
        off = nr_arena_alloc(&reg.r, size)
    if off == 0:
        raise _exc.ObjectStoreFullError(
            "nanoray: the object store is full: %d bytes requested, %d free at most "
            "(object_store_memory=%d). Free refs you no longer need, or pass a larger "
            "object_store_memory to init()." % (
                size, nr_arena_largest_free(&reg.r), reg.stats()["store_capacity"]))
    return off


cdef uint64_t _store(Region reg, _Pickled p) except 0:
    """Writes a payload into a new arena block; returns its offset."""
    cdef uint64_t off = _alloc(reg, p.size)
    try:
        _write_payload(reg.r.base + off, p, True)
    except BaseException:
        nr_arena_free(&reg.r, off)
        raise
    return off


cdef object _load(Region reg, uint64_t oid, char *ptr, bint copy):
    """Rebuilds a value from a payload; buffers are pinned views unless copy."""
    cdef nr_payload_t *hdr = <nr_payload_t *>ptr
    cdef uint64_t *table = nr_payload_contained(hdr) + hdr.ncontained
    cdef char *stream = <char *>(table + 2 * hdr.nbufs)
    data = PyMemoryView_FromMemory(stream, hdr.pickle_len, PyBUF_READ)
    if hdr.nbufs == 0:
        return _pickle_loads(data)
    cdef list bufs = []
    cdef uint32_t i
    for i in range(hdr.nbufs):
        if copy:
            # an immutable copy: arrays come out read-only, as large ones do
            bufs.append(bytes(PyMemoryView_FromMemory(ptr + table[2 * i], table[2 * i + 1], PyBUF_READ)))
        else:
            bufs.append(memoryview(_pin(reg, oid, ptr + table[2 * i], table[2 * i + 1])))
    return _pickle_loads(data, buffers=bufs)


cdef object _value(Region reg, uint64_t oid, bint *is_error):
    """The value of a sealed object (an exception instance if it failed)."""
    cdef uint64_t data, size
    cdef int st = nr_object_info(&reg.r, oid, &data, &size)
    if st < 0:
        raise _exc.ObjectLostError("nanoray: object %016x is gone (freed or never existed)" % oid)
    is_error[0] = st == NR_OBJ_ERROR
    if data == 0:
        is_error[0] = True
        return _exc.RaySystemError("nanoray: the task failed and its error could not be stored")
    try:
        return _load(reg, oid, reg.r.base + data, False)
    except Exception as e:
        if st != NR_OBJ_ERROR:
            raise
        return _exc.RaySystemError("nanoray: the task failed, and its error could not be "
                                   "deserialized here: %s" % _exc._safe_repr(e))


cdef ObjectRef put_pickled(Region reg, _Pickled p):
    """Stores a pickled value as a new sealed object; returns its ref."""
    cdef uint64_t off = _store(reg, p)
    cdef uint64_t oid = nr_put(&reg.r, off, p.size)
    if oid == 0:
        nr_arena_free(&reg.r, off)
        raise _exc.ObjectStoreFullError("nanoray: the object table is full")
    return _adopt(reg, oid)


def put(value):
    cdef Region reg = _region
    if type(value) is ObjectRef:
        raise TypeError("Calling put() on an ObjectRef is not allowed: it is already in the store")
    return put_pickled(reg, _pickle(value, False))


cdef void _seal(Region reg, uint64_t oid, object value, bint is_error, str name="") except *:
    """Stores value as the object's result.  If the value cannot be pickled
    or stored, the object is sealed with that error instead: a pending
    object is never left behind (its getters would wait forever)."""
    cdef _Pickled p
    cdef uint64_t off = 0
    try:
        p = _pickle(value, is_error)
        off = _store(reg, p)
    except Exception as e:
        if isinstance(e, _exc.ObjectStoreFullError):
            cause = e                  # catchable as ObjectStoreFullError by the caller
        else:
            cause = _exc.RaySystemError("nanoray: the result of %s() could not be serialized: %s"
                                        % (name, _exc._safe_repr(e)))
        err = _exc.RayTaskError(name, "", cause, os.getpid())
        try:
            p = _pickle(err, True)
            off = _store(reg, p)
        except Exception:
            off = 0                    # sealed with no payload: read back as a system error
        is_error = True
    if nr_object_seal(&reg.r, oid, off, p.size if off else 0, is_error) != 0 and off:
        nr_arena_free(&reg.r, off)


def seal_error(uint64_t oid, err):
    """Seals a pending object with an error (used when a task cannot run)."""
    _seal(_region, oid, err, True)


# --------------------------------------------------------------------------
# get / wait


# How long "every worker waits in get() at the worker limit, with work
# queued" must last before a waiting task calls it a deadlock.  The state
# also occurs for an instant while a worker whose object was just sealed
# wakes up; a real deadlock lasts forever.
STUCK_NS = 1000 * 1000 * 1000


cdef unsigned long _wait_enter(Region reg, bint timed):
    """A thread of this worker starts waiting for an object while a task
    runs: the first such waiter lends the task's CPUs (any thread: a
    future(), an await, a thread pool).  Returns the tag to pass to
    _wait_exit, 0 when nothing was lent."""
    global _waiters, _timed_waiters
    if not _in_task:
        return 0
    if _waiters == 0:
        nr_proc_block(&reg.r, _slot)
    _waiters += 1
    if timed:
        if _timed_waiters == 0:
            nr_proc_may_progress(&reg.r, _slot, 1)
        _timed_waiters += 1
    return _task_seq


cdef void _wait_exit(Region reg, unsigned long tag, bint timed):
    """The waiter is done; the last one takes the CPUs back.  A waiter whose
    task has ended meanwhile (tag changed) touches nothing: the task's end
    already settled the accounting."""
    global _waiters, _timed_waiters
    if tag == 0 or tag != _task_seq:
        return
    if timed:
        _timed_waiters -= 1
        if _timed_waiters == 0:
            nr_proc_may_progress(&reg.r, _slot, 0)
    _waiters -= 1
    if _waiters == 0:
        nr_proc_unblock(&reg.r, _slot)


cdef void _task_ended(Region reg):
    """Settles waiters still running in other threads when their task ends."""
    global _waiters, _timed_waiters, _task_seq
    if _waiters:
        nr_proc_unblock(&reg.r, _slot)
        _waiters = 0
    if _timed_waiters:
        nr_proc_may_progress(&reg.r, _slot, 0)
        _timed_waiters = 0
    _task_seq += 1


cdef int _check_stuck(Region reg, int64_t *since) except -1:
    """Raises once the runtime has been unable to make progress for STUCK_NS."""
    if not nr_stuck(&reg.r):
        since[0] = 0
        return 0
    cdef int64_t now = nr_now_ns()
    if since[0] == 0:
        since[0] = now
    elif now - since[0] >= STUCK_NS:
        s = reg.stats()
        raise _exc.RaySystemError(
            "nanoray: deadlock avoided: all %d workers are running tasks that wait in get(), "
            "the worker limit (%d) is reached, and %d queued tasks cannot start. Nest less "
            "deeply, get() fewer results from inside tasks, or raise init(_max_workers=)."
            % (s["workers"], s["max_workers"], s["queued"]))
    return 0


cdef int _wait_one(Region reg, uint64_t oid, int64_t deadline) except -1:
    """0 when sealed, 1 on timeout.  Inside a task, lends the task's CPUs."""
    cdef int st = nr_object_info(&reg.r, oid, NULL, NULL)
    if st != NR_OBJ_PENDING:
        if st < 0:
            raise _exc.ObjectLostError("nanoray: object %016x is gone (freed or never existed)" % oid)
        return 0
    cdef int rc
    cdef int64_t left, slice_ns, spin = GET_SPIN_NS
    cdef bint timed = deadline >= 0
    cdef unsigned long tag = _wait_enter(reg, timed)
    cdef int64_t stuck_since = 0
    try:
        while True:
            slice_ns = WAIT_SLICE_NS
            if deadline >= 0:
                left = deadline - nr_now_ns()
                if left <= 0:
                    return 1
                if left < slice_ns:
                    slice_ns = left
            with nogil:
                rc = nr_object_wait(&reg.r, oid, slice_ns, spin)
            spin = 0
            if rc == 0:
                return 0
            if rc < 0:
                if reg.r.hdr.shutdown:
                    raise _exc.RaySystemError("nanoray was shut down while waiting for an object")
                raise _exc.ObjectLostError("nanoray: object %016x is gone" % oid)
            PyErr_CheckSignals()
            if tag and not timed:          # a timed wait ends by itself
                _check_stuck(reg, &stuck_since)
            if _liveness_check is not None:
                _liveness_check()
    finally:
        _wait_exit(reg, tag, timed)


cdef inline int64_t _deadline(timeout) except? -2:
    if timeout is None or timeout < 0:       # negative: wait forever, as Ray's get()
        return -1
    return nr_now_ns() + <int64_t>(timeout * 1e9)


cdef inline Region _check_ref(object ref):
    if type(ref) is not ObjectRef:
        raise TypeError("expected an ObjectRef, got %r" % (type(ref).__name__,))
    cdef Region reg = (<ObjectRef>ref)._reg
    if reg is not _region or reg is None:
        raise _exc.RaySystemError(
            "nanoray: this ObjectRef belongs to a runtime that was shut down")
    return reg


cdef object _get_one(ObjectRef ref, int64_t deadline):
    cdef Region reg = _check_ref(ref)
    cdef bint is_error = False
    if _wait_one(reg, ref._id, deadline):
        raise _exc.GetTimeoutError("Get timed out: some object(s) not ready.")
    value = _value(reg, ref._id, &is_error)
    if is_error:
        if isinstance(value, _exc.RayTaskError):
            raise value.as_instanceof_cause()
        raise value
    return value


def get(object refs, timeout=None):
    """Values of a sequence of refs, in order (the API layer validates)."""
    cdef int64_t deadline = _deadline(timeout)
    return [_get_one(r, deadline) for r in refs]


def get_one(ObjectRef ref, timeout=None):
    return _get_one(ref, _deadline(timeout))


def wait(list refs, int num_returns, timeout):
    """Indices of the first num_returns sealed refs (input order)."""
    cdef Py_ssize_t n = len(refs), i
    if n == 0:
        return []
    cdef Region reg = _check_ref(refs[0])
    cdef uint64_t *ids = <uint64_t *>malloc(n * 8)
    cdef uint8_t *ready = <uint8_t *>malloc(n)
    cdef int64_t deadline = _deadline(timeout), left, slice_ns, spin = GET_SPIN_NS
    cdef int k
    cdef bint timed = deadline >= 0
    cdef unsigned long tag = 0
    cdef bint entered = False
    cdef int64_t stuck_since = 0
    try:
        for i in range(n):
            _check_ref(refs[i])
            ids[i] = (<ObjectRef>refs[i])._id
        while True:
            slice_ns = WAIT_SLICE_NS
            if deadline >= 0:
                left = deadline - nr_now_ns()
                if left < 0:
                    left = 0
                if left < slice_ns:
                    slice_ns = left
            with nogil:
                k = nr_wait_many(&reg.r, ids, <int>n, num_returns, 0, 0, ready)
            if k >= num_returns or slice_ns == 0:
                break
            if not entered:
                tag = _wait_enter(reg, timed)
                entered = True
            with nogil:
                k = nr_wait_many(&reg.r, ids, <int>n, num_returns, slice_ns, spin, ready)
            spin = 0
            if k >= num_returns:
                break
            if reg.r.hdr.shutdown:
                raise _exc.RaySystemError("nanoray was shut down while waiting for objects")
            PyErr_CheckSignals()
            if tag and not timed:
                _check_stuck(reg, &stuck_since)
            if _liveness_check is not None:
                _liveness_check()
        out = []
        for i in range(n):
            if ready[i] and len(out) < num_returns:
                out.append(i)
        return out
    finally:
        if entered:
            _wait_exit(reg, tag, timed)
        free(ids)
        free(ready)


# --------------------------------------------------------------------------
# Tasks


def ref_if_alive(uint64_t oid):
    """An ObjectRef to oid if the object is sealed and still counted, else None."""
    cdef Region reg = _region
    if reg is None or not nr_object_try_incref(&reg.r, oid):
        return None
    return _adopt(reg, oid)


def export_function(func, on_reserved):
    """Stores a pickled function; returns the ref that keeps it.

    In two steps: the object is reserved first and on_reserved(ref) is
    called before pickling, so a RemoteFunction inside the function's own
    globals (a function that submits itself) pickles the id of this very
    export, and copies of it in workers reuse it instead of storing the
    function again."""
    cdef Region reg = _region
    cdef uint64_t oid = nr_object_create(&reg.r)
    if oid == 0:
        raise _exc.ObjectStoreFullError("nanoray: the object table is full")
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
           int32_t cpus_milli, int32_t retries, uint32_t target=0):
    """Queues func(*args, **kwargs); returns its return ObjectRef(s)."""
    cdef Region reg = _region
    if func_ref._reg is not reg:
        raise _exc.RaySystemError("nanoray: this function was exported to a runtime that was shut down")
    cdef list deps = None
    cdef Py_ssize_t i
    cdef object a
    cdef list largs
    for i in range(len(args)):
        a = args[i]
        if type(a) is ObjectRef:
            _check_ref(a)
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
    cdef _Pickled p
    try:
        p = _pickle((args, kwargs), False)
    except Exception as e:
        raise TypeError("nanoray: could not serialize the arguments of the task: %s"
                        % _exc._safe_repr(e)) from e
    cdef ObjectRef args_ref = None
    cdef uint64_t args_bytes = p.size
    if p.size > INLINE_ARGS_MAX:
        args_ref = put_pickled(reg, p)
        args_bytes = 0
    cdef uint32_t ndeps = 0 if deps is None else len(deps)
    cdef uint32_t ncont = 0 if args_ref is not None else len(p.contained)
    cdef uint64_t size = sizeof(nr_spec_t) + 8 * (nret + ndeps + ncont) + args_bytes
    cdef uint64_t off = _alloc(reg, size)
    cdef nr_spec_t *spec = <nr_spec_t *>(reg.r.base + off)
    spec.func_id = func_ref._id
    spec.args_obj = args_ref._id if args_ref is not None else 0
    spec.args_len = args_bytes
    spec.nret = nret
    spec.ndeps = ndeps
    spec.ncontained = ncont
    cdef uint64_t *ids = nr_spec_ids(spec)
    for i in range(ndeps):
        ids[nret + i] = (<ObjectRef>deps[i])._id
    for i in range(ncont):
        ids[nret + ndeps + i] = (<ObjectRef>p.contained[i])._id
    if args_ref is None:
        _write_payload(nr_spec_args(spec), p, False)
    cdef uint64_t rets_stack[8]
    cdef uint64_t *rets = &rets_stack[0]
    if nret > 8:
        rets = <uint64_t *>malloc(8 * nret)
    cdef uint32_t t
    try:
        t = nr_task_submit(&reg.r, off, cpus_milli, retries, target, rets)
        if t == 0:
            nr_arena_free(&reg.r, off)
            s = reg.stats()
            raise _exc.RaySystemError(
                "nanoray: no room for another task: %d tasks pending and %d objects alive "
                "(tables hold %d each). Release ObjectRefs you no longer need, or wait "
                "for results before submitting more." % (s["tasks"], s["objects"], 1 << 20))
        # The spec belongs to the task now (it may already have run and been
        # freed): the ids come from rets, written under the region lock.
        if nret == 1:
            return _adopt(reg, rets[0])
        return [_adopt(reg, rets[i]) for i in range(nret)]
    finally:
        if rets != &rets_stack[0]:
            free(rets)


# --------------------------------------------------------------------------
# Workers


# Deserialized functions kept per worker; past this many the cache restarts
# (a program with more distinct remote functions pays an unpickle again).
FUNCTION_CACHE_MAX = 4096


cdef object _function(Region reg, uint64_t fid):
    cdef bint is_error = False
    f = _funcs.get(fid)
    if f is None:
        f = _value(reg, fid, &is_error)
        if is_error:                     # never cached: the next task tries again
            raise _exc.RaySystemError("nanoray: the task's function could not be loaded: %s"
                                      % _exc._safe_repr(f))
        if len(_funcs) >= FUNCTION_CACHE_MAX:
            _funcs.clear()
        _funcs[fid] = f
    return f


cdef void _run_task(Region reg, uint32_t t) except *:
    global _in_task
    cdef nr_task_t *task = nr_task(&reg.r, t)
    cdef nr_spec_t *spec = <nr_spec_t *>(reg.r.base + task.spec)
    cdef uint64_t *ids = nr_spec_ids(spec)
    cdef uint32_t nret = spec.nret, ndeps = spec.ndeps, i
    cdef bint is_error = False
    cdef object result
    cdef object failure = None
    cdef bint exit_worker = False
    name = "task"
    _in_task = True
    try:
        try:
            func = _function(reg, spec.func_id)
            name = getattr(func, "__qualname__", None) or getattr(func, "__name__", "task")
            if spec.args_obj:
                args, kwargs = _value(reg, spec.args_obj, &is_error)
            else:
                args, kwargs = _load(reg, 0, nr_spec_args(spec), True)
            if ndeps:
                vals = []
                for i in range(ndeps):
                    v = _value(reg, ids[nret + i], &is_error)
                    if is_error:
                        failure = v        # a failed argument fails this task too
                        break
                    vals.append(v)
                if failure is None:
                    args = tuple([vals[(<_DepArg>a).i] if type(a) is _DepArg else a for a in args])
                    if kwargs:
                        kwargs = {k: (vals[(<_DepArg>a).i] if type(a) is _DepArg else a)
                                  for k, a in kwargs.items()}
            if failure is None:
                result = func(*args, **kwargs) if kwargs else func(*args)
        except SystemExit:
            # As in Ray: the worker exits; the task is retried (max_retries)
            # or fails with WorkerCrashedError.  Never re-raised in the driver,
            # where it would end the program silently.
            exit_worker = True
        except KeyboardInterrupt:
            failure = _exc.TaskCancelledError("nanoray: task %s() was interrupted" % name)
        except BaseException as e:
            if isinstance(e, _exc.RayTaskError):
                # A task it waited on failed: keep that cause; the traceback
                # shows this task's frames, then the inner task's.
                failure = _exc.RayTaskError(name, _format_tb(e), e.cause, os.getpid(),
                                            cause_repr=e.cause_repr)
            else:
                failure = _exc.RayTaskError(name, _format_tb(e), e, os.getpid())
        if exit_worker:
            return
        if failure is None and nret != 1:
            try:
                result = tuple(result)
                if len(result) != nret:
                    raise ValueError("the task returned %d values; num_returns is %d" % (len(result), nret))
            except Exception as e:
                failure = _exc.RayTaskError(name, _format_tb(e), e, os.getpid())
        for i in range(nret):
            if failure is not None:
                _seal_failure(reg, ids[i], failure, name)
            else:
                _seal(reg, ids[i], result if nret == 1 else result[i], False, name)
    finally:
        _in_task = False
        args = kwargs = result = vals = None
        if exit_worker:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        # Whatever escaped above, no return may stay pending (its getters
        # would wait forever): seal it with no payload, read back as a
        # system error.
        for i in range(nret):
            if nr_object_info(&reg.r, ids[i], NULL, NULL) == NR_OBJ_PENDING:
                nr_object_seal(&reg.r, ids[i], 0, 0, 1)
        _task_ended(reg)
        nr_task_finish(&reg.r, _slot, t)


cdef str _format_tb(BaseException e):
    """The traceback of e from the user's code on (runtime frames dropped)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.endswith("_runtime.pyx"):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb))


cdef void _seal_failure(Region reg, uint64_t oid, failure, str name) except *:
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
    _seal(reg, oid, failure, True, name)


def worker_loop(Region reg, uint32_t slot):
    """Runs tasks until shutdown (returns 0) or idle retirement (-1)."""
    cdef int64_t t
    cdef int64_t spin = WORKER_SPIN_NS, idle = IDLE_RETIRE_NS
    while True:
        with nogil:
            t = nr_task_next(&reg.r, slot, spin, idle)
        if t <= 0:
            return t
        _run_task(reg, <uint32_t>t)


def task_returns(Region reg, uint32_t t):
    """Return ids of task t that are still pending."""
    cdef nr_task_t *task = nr_task(&reg.r, t)
    cdef nr_spec_t *spec = <nr_spec_t *>(reg.r.base + task.spec)
    cdef uint64_t *ids = nr_spec_ids(spec)
    return [ids[i] for i in range(spec.nret)
            if nr_object_info(&reg.r, ids[i], NULL, NULL) == NR_OBJ_PENDING]


def task_retry(Region reg, uint32_t t):
    return nr_task_retry(&reg.r, t)


def task_release(Region reg, uint32_t t):
    nr_task_release(&reg.r, t)


def proc_reap(Region reg, uint32_t slot):
    return nr_proc_reap(&reg.r, slot)


def set_parent_death_signal(int sig):
    """The kernel sends sig to this process when its parent thread exits."""
    if prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_PDEATHSIG) failed")
