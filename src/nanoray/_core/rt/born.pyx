# Arrays born in the arena: numpy's allocator hook (NEP 49) in workers, so
# that a task's large result is stored without a copy.  The design, and why
# a handed-off array is remapped copy-on-write, is in csrc/nr_born.h; the
# allocator itself is C (csrc/nr_born_local.c).  Included by _runtime.pyx.
#
# Workers only, not the driver: an array born in the arena outlives
# nothing safely once the region is unmapped (shutdown() unmaps it while
# the driver's arrays live on), and the driver's arrays would take store
# memory from the objects of users who never call put.

from cpython.pycapsule cimport PyCapsule_New, PyCapsule_GetPointer
from cpython.ref cimport PyObject, Py_XDECREF

# Allocations of at least this many bytes are born in the arena.  1 MiB: a
# copy of one into the store costs >= 80 us (12 GB/s, warm), a locked
# arena allocation ~1-2 us; page alignment and rounding waste < 1% of it;
# and smaller arrays stay in malloc's warm heap, with no lock taken.
BORN_MIN_BYTES = int(os.environ.get("NANORAY_BORN_MIN_BYTES", 1 << 20))
cdef uint64_t _born_min = BORN_MIN_BYTES

ctypedef PyObject *(*_set_handler_t)(PyObject *)
ctypedef PyObject *(*_get_handler_t)()

cdef bint _born_on = False        # this process's large arrays may be born in the arena
cdef bint _born_lazy = False      # _complete is sealing a task's results (see _born_lazy_now)
cdef int _born_threads = 1        # Python threads of this process when it started
cdef object _born_capsule = None  # our "mem_handler" capsule
cdef object _born_prev = None     # the handler there was (its arrays still free through it)


cdef void **_np_api_table = NULL
cdef dict _sys_modules = sys.modules
cdef Py_ssize_t _np_modules_seen = -1    # len(sys.modules) when numpy was last looked for


cdef void **_np_api() except? NULL:
    """numpy's C API table (what import_array() reads), NULL without numpy."""
    global _np_api_table, _np_modules_seen
    if _np_api_table != NULL:
        return _np_api_table
    # Looked at per task, kept cheap: sys.modules is searched again only
    # once it has grown (or shrunk) since.
    cdef Py_ssize_t n = PyDict_Size(_sys_modules)
    if n == _np_modules_seen:
        return NULL
    _np_modules_seen = n
    if PyDict_GetItem(_sys_modules, "numpy") == NULL:
        return NULL
    try:
        try:
            from numpy._core import _multiarray_umath as m     # numpy >= 2
        except ImportError:
            from numpy.core import _multiarray_umath as m      # numpy 1.22 ..
    except Exception:                  # not importable here (sys.modules["numpy"] = None)
        return NULL
    _np_api_table = <void **>PyCapsule_GetPointer(m._ARRAY_API, NULL)
    return _np_api_table


cdef int _born_thread() except -1:
    """Installs the handler in this thread's context, where numpy reads it
    (a context variable: each thread starts with numpy's default)."""
    global _born_capsule, _born_prev, _born_on
    cdef void **api = _np_api()
    if api == NULL:
        return 0                      # numpy not imported yet: the next task looks again
    cdef PyObject *cur = (<_get_handler_t>api[305])()       # PyDataMem_GetHandler
    if cur == NULL:
        raise RuntimeError("nanoray: PyDataMem_GetHandler failed")
    prev = <object>cur
    Py_XDECREF(cur)
    if prev is _born_capsule:
        nr_born_thread_set()
        return 0
    cdef nr_np_handler_t *h
    if _born_capsule is None:
        h = <nr_np_handler_t *>PyCapsule_GetPointer(prev, "mem_handler")
        if h.version != 1 or nr_born_init(&_region.r, _born_min, &h.allocator) != 0:
            _born_on = False
            return 0
        _born_prev = prev
        _born_capsule = PyCapsule_New(&nr_born_handler, "mem_handler", NULL)
        os.register_at_fork(before=_born_forking, after_in_child=_born_forked)
    cur = (<_set_handler_t>api[304])(<PyObject *>_born_capsule)   # PyDataMem_SetHandler
    if cur == NULL:
        raise RuntimeError("nanoray: PyDataMem_SetHandler failed")
    Py_XDECREF(cur)
    nr_born_thread_set()
    return 0


cdef extern from "Python.h":
    ctypedef struct PyInterpreterState:
        pass
    ctypedef struct PyThreadState:
        pass
    PyInterpreterState *PyInterpreterState_Get()
    PyThreadState *PyInterpreterState_ThreadHead(PyInterpreterState *interp)
    PyThreadState *PyThreadState_Next(PyThreadState *tstate)


cdef int _thread_states():
    """Threads that can run Python here: every thread state of the
    interpreter, including threads threading does not know of
    (_thread.start_new_thread, C threads calling back into Python)."""
    cdef int n = 0
    cdef PyThreadState *t = PyInterpreterState_ThreadHead(PyInterpreterState_Get())
    while t != NULL:
        n += 1
        t = PyThreadState_Next(t)
    return n


cdef bint _born_lazy_now() except -1:
    """Whether hand-offs may wait for nr_born_settle to remap: a task's
    results are being sealed, and no user code can run until the task has
    ended (no other thread: not a threaded or async actor, and no thread
    the user started)."""
    return (_born_lazy and not _actor_opts.get("is_async")
            and _actor_opts.get("max_concurrency", 1) == 1 and not _actor_opts.get("groups")
            and _thread_states() <= _born_threads)


cdef inline int _born_check() except -1:
    """Per task: the running thread allocates through the handler."""
    if _born_on and not nr_born_thread_ready():
        _born_thread()
    return 0


def _born_forking():
    nr_born_before_fork()


def _born_forked():
    nr_born_after_fork_child()


def born_setup(Region reg):
    """A worker or actor process starts: its large arrays are born in the
    arena unless init(_system_config={"born_in_shm": False}) (or
    NANORAY_BORN_IN_SHM=0) said otherwise."""
    global _born_on, _born_threads
    if os.environ.get("NANORAY_BORN_IN_SHM", "1") == "0" or reg.r.fd < 0:
        return
    _born_on = True
    _born_threads = _thread_states()
    _born_thread()


def born_pause(bint paused):
    """Tests: stop (or resume) serving allocations from the arena here."""
    nr_born_pause(paused)


def born_stats():
    """What this process counted: allocations born in the arena, fallbacks
    to the previous handler, blocks handed to the store, live blocks."""
    cdef nr_born_stats_t s
    nr_born_get_stats(&s)
    return dict(enabled=bool(_born_on), threshold=BORN_MIN_BYTES, born=s.born,
                born_bytes=s.born_bytes, fallbacks=s.fallbacks, handoffs=s.handoffs,
                handoff_bytes=s.handoff_bytes, frees=s.frees, live=s.live,
                live_bytes=s.live_bytes, remap_failures=s.remap_failures,
                fork_copies=s.fork_copies, settled=s.settled,
                thread_ready=bool(nr_born_thread_ready()))


def born_offset(arr):
    """Tests: the born block the data of arr lies in (its payload offset),
    if arr was born here and not yet handed to the store; else None."""
    cdef Py_buffer view
    cdef uint64_t block = 0
    PyObject_GetBuffer(arr, &view, PyBUF_SIMPLE)
    try:
        if nr_born_find(<char *>view.buf, view.len, &block):
            return block
        return None
    finally:
        PyBuffer_Release(&view)


def born_blocks(ObjectRef ref):
    """Tests: the born blocks an object's buffers live in (payload offsets,
    0 for a buffer copied into its payload), [] when none."""
    cdef Region reg = _running()
    cdef uint64_t data = 0
    cdef uint64_t *blocks
    if nr_object_info(&reg.r, ref._id, &data, NULL) < 0 or data == 0:
        return []
    blocks = nr_payload_blocks(<nr_payload_t *>(reg.r.base + data))
    if blocks == NULL:
        return []
    return [blocks[i] for i in range(nr_payload_nbufs(<nr_payload_t *>(reg.r.base + data)))]


def born_count(Region reg=None):
    """Tests: born blocks in use in the region (any process's), and bytes."""
    cdef uint64_t nbytes = 0
    if reg is None:
        reg = _running()
    n = nr_born_count(&reg.r, &nbytes)
    return n, nbytes
