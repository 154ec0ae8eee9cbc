# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled runtime: one extension module, one concern per file.

    rt/handle.pyx   Region: this process's mapping of the shared region
    rt/refs.pyx     ObjectRef, _DepArg, _PinnedBuffer: what holds counts
    rt/serial.pyx   values <-> payloads in the arena; put; sealing results
    rt/born.pyx     numpy arrays born in the arena (NEP 49): returned without a copy
    rt/waiting.pyx  get and wait; CPU lending while a task waits
    rt/submit.pyx   exporting functions; task specs; submit
    rt/worker.pyx   running tasks in workers; what the zygote calls on a death
    rt/stream.pyx   generator tasks: values streamed as they are yielded
    rt/cancel.pyx   cancelling tasks
    rt/resources.pyx resources beyond CPUs: GPUs, memory, custom
    rt/actor.pyx    actors: creation, method calls, handles, their processes

Each rt/*.pyx has its declarations in rt/*.pxd, gathered by _runtime.pxd
(uvloop's layout): a reader finds each concern in its own file, and calls
between them stay direct C calls inside one module.

Serialization (what crosses the region)
---------------------------------------
A value becomes a *payload* in one arena block::

    nr_payload_t | contained ids | {off, len} per buffer | pickle | buffers

In workers, numpy arrays of at least 1 MiB are born in arena blocks of
their own (numpy's allocator hook: rt/born.pyx, csrc/nr_born.h); a payload
then refers to such a block instead of copying it (a blocks[] table after
the buffer table; the object counts the block in its header).

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

import contextvars as _contextvars
import numbers as _numbers
import os
import pickle
import sys
import threading
import time
import traceback

cimport cython
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongAndOverflow, PyLong_AsLongLongAndOverflow
from cpython.unicode cimport PyUnicode_DecodeUTF8
from cpython.exc cimport PyErr_Clear
from cpython.dict cimport PyDict_GetItem, PyDict_Size
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_New
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.exc cimport PyErr_CheckSignals
from libc.string cimport memcpy
from libc.stdlib cimport malloc, free
from posix.unistd cimport close, getpid
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_SHARED, MAP_FAILED


cdef extern from "Python.h":
    enum:
        PyBUF_READ
        PyBUF_WRITE
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size)    # NULL: error set
    void _tuple_steal "PyTuple_SET_ITEM" (object t, Py_ssize_t i, PyObject *o)

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
cdef uint64_t _last_fid = 0        # the last one looked up there, and its entry
cdef tuple _last_entry = None
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


include "rt/handle.pyx"
include "rt/refs.pyx"
include "rt/born.pyx"
include "rt/simple.pyx"
include "rt/serial.pyx"
include "rt/waiting.pyx"
include "rt/submit.pyx"
include "rt/functions.pyx"
include "rt/worker.pyx"
include "rt/stream.pyx"
include "rt/cancel.pyx"
include "rt/resources.pyx"
include "rt/actor.pyx"
include "rt/spill.pyx"
include "rt/state.pyx"
