# Cancelling tasks (nanoray.cancel) and the signal that interrupts one.
# Included by _runtime.pyx: one extension module, one concern per file.
#
# The task is marked cancelled under the region lock (csrc/nr_sched.c): a
# queued or waiting task then never starts (the worker that pops it fails
# it instead), and no cancelled task is retried.  Returns still pending are
# sealed with TaskCancelledError right away when the task is not running,
# or when force kills its worker (sealed first, so the death is not
# reported as a crash).  A running task gets SIGINT, sent under the lock to
# the process still running it; the worker's handler raises
# KeyboardInterrupt only while that task's own code runs, so a signal that
# arrives late never reaches the next task or the runtime's bookkeeping.
# Running calls of sync and threaded actors are not interrupted (the
# actor's state would be left half-changed), as in Ray; they see
# get_runtime_context().is_canceled().  An async actor cancels the call's
# asyncio.Task within CANCEL_POLL_S (rt/actor.pyx).

import signal as _signal

cdef bint _in_user_code = False    # the main thread runs a pool task's own code


cdef int _cancel_task(Region reg, uint32_t t, uint32_t gen, bint force, bint recursive,
                      int depth, bint running_too=True) except -1:
    """1 when the task was stopped before it started (it never runs)."""
    cdef int32_t pid = 0
    cdef uint32_t kind = 0, nret = 16, i, cap
    cdef uint64_t rets_stack[16]
    cdef uint64_t *rets = &rets_stack[0]
    cdef int st = nr_task_cancel(&reg.r, t, gen, 0, &pid, &kind, rets, &nret)
    if st < 0 or (st == NR_TASK_RUNNING and not running_too):
        return 0                            # finished meanwhile, or left to run
    if force and kind != NR_SPEC_TASK:
        if depth == 0:
            raise ValueError("force=True is not supported for actor tasks (an actor call "
                             "cannot be killed alone); use nanoray.kill() on the actor")
        force = False                       # a descendant actor call: cancelled, not killed
    cap = 16
    if nret > 16:
        cap = nret + 1                      # (one more: a generator's cell may appear)
        rets = <uint64_t *>malloc(8 * cap)
        if rets == NULL:
            raise MemoryError()
    nret = cap
    try:
        # Not running_too: marked only if it has not started (in one step).
        st = nr_task_cancel(&reg.r, t, gen, 1 if running_too else 2, &pid, &kind, rets, &nret)
        if st < 0 or (st == NR_TASK_RUNNING and not running_too):
            return 0
        err = _exc.TaskCancelledError(
            "%016x" % ((<uint64_t>gen << 32) | t),
            "nanoray: task %016x was cancelled by nanoray.cancel()" % ((<uint64_t>gen << 32) | t))
        if st != NR_TASK_RUNNING or force:
            for i in range(min(nret, cap)):
                if nr_object_info(&reg.r, rets[i], NULL, NULL) == NR_OBJ_PENDING:
                    _seal(reg, rets[i], err, True)
        if st == NR_TASK_READY:
            nr_task_drop(&reg.r, t, gen)    # waiting for resources: released now
        if st == NR_TASK_RUNNING and kind != NR_SPEC_TASK and not reg.r.hdr.cancel_err:
            # If its actor dies before the call ends, the call fails with this.
            ref = put_pickled(reg, _pickle(_exc.TaskCancelledError(
                error_message="nanoray: this actor call was cancelled by nanoray.cancel() "
                              "while running, and its actor then died"), True), True)
            nr_cancel_set_error(&reg.r, (<ObjectRef>ref)._id)
        if st == NR_TASK_RUNNING and kind == NR_SPEC_TASK and running_too:
            nr_task_signal(&reg.r, t, gen, _signal.SIGKILL if force else _signal.SIGINT)
    finally:
        if rets != &rets_stack[0]:
            free(rets)
    if recursive and depth < 64:
        for child in _children(reg, (<uint64_t>gen << 32) | t):
            _cancel_task(reg, <uint32_t>(child & 0xFFFFFFFF), <uint32_t>(child >> 32), force,
                         recursive, depth + 1)
    return st != NR_TASK_RUNNING


ctypedef uint32_t (*_task_lister)(nr_region_t *, uint64_t, uint64_t *, uint32_t) nogil


cdef list _list_tasks(Region reg, _task_lister lister, uint64_t key):
    """(gen << 32 | t) of every task lister finds for key."""
    cdef uint32_t cap = 64, n
    cdef uint64_t *out
    while True:
        out = <uint64_t *>malloc(8 * cap)
        if out == NULL:
            raise MemoryError()
        try:
            n = lister(&reg.r, key, out, cap)
            if n <= cap:
                return [out[i] for i in range(n)]
        finally:
            free(out)
        cap = n + 64


cdef list _children(Region reg, uint64_t parent):
    return _list_tasks(reg, nr_task_children, parent)


def cancel(ObjectRef ref, bint force, bint recursive):
    """Cancels the task whose return ref is; a no-op when it has finished
    (or ref is not a task's return, e.g. from put())."""
    cdef Region reg = _check_ref(ref)
    cdef uint32_t gen = 0
    cdef uint32_t t = nr_task_of(&reg.r, ref._id, &gen)
    if t:
        _cancel_task(reg, t, gen, force, recursive, 0)


def cancel_unstarted(ObjectRef ref):
    """Cancels the task whose return ref is only if it has not started
    (a concurrent.futures Future's cancel()): True if it never runs; one
    that has started is left alone (checked and marked in one step)."""
    cdef Region reg = _check_ref(ref)
    cdef uint32_t gen = 0
    cdef uint32_t t = nr_task_of(&reg.r, ref._id, &gen)
    return bool(t) and _cancel_task(reg, t, gen, False, False, 0, False) == 1


def task_of(ObjectRef ref):
    """(task, generation) whose return ref is, or None: what a generator
    keeps to be cancelled without keeping its first cell alive."""
    cdef Region reg = _check_ref(ref)
    cdef uint32_t gen = 0
    cdef uint32_t t = nr_task_of(&reg.r, ref._id, &gen)
    return (reg.session, t, gen) if t else None


def cancel_task(tuple key, bint force, bint recursive):
    """cancel() for a (session, task, generation) from task_of."""
    cdef Region reg = _running()
    if key[0] == reg.session:
        _cancel_task(reg, key[1], key[2], force, recursive, 0)


def _on_cancel_signal(signum, frame):
    """SIGINT in a worker: KeyboardInterrupt in the task's own code, if its
    task was cancelled; otherwise (a late signal) ignored."""
    if _in_user_code and task_cancel_requested():
        raise KeyboardInterrupt


def install_cancel_handler():
    """In a worker process, before it runs tasks."""
    _signal.signal(_signal.SIGINT, _on_cancel_signal)


def fail_unstarted(list keys, err):
    """Fails the tasks (session, task, generation) that have not started
    with err: they never run (a placement group removed under them)."""
    cdef Region reg = _running()
    cdef int32_t pid = 0
    cdef uint32_t kind = 0, nret, i, t, gen, cap
    cdef uint64_t *rets
    for key in keys:
        if key[0] != reg.session:
            continue
        t, gen = key[1], key[2]
        nret = 0                           # first how many returns (f.map's chunks: many)
        st = nr_task_cancel(&reg.r, t, gen, 0, &pid, &kind, NULL, &nret)
        if st < 0 or st == NR_TASK_RUNNING:
            continue
        nret += 1                          # (one more: a generator's cell may appear)
        rets = <uint64_t *>malloc(8 * nret)
        if rets == NULL:
            raise MemoryError()
        try:
            cap = nret
            st = nr_task_cancel(&reg.r, t, gen, 1, &pid, &kind, rets, &nret)
            if st < 0 or st == NR_TASK_RUNNING:
                continue
            for i in range(min(nret, cap)):
                if nr_object_info(&reg.r, rets[i], NULL, NULL) == NR_OBJ_PENDING:
                    _seal(reg, rets[i], err, True)
        finally:
            free(rets)
        nr_task_drop(&reg.r, t, gen)
