# get and wait: spin, then sleep on a futex; a task that waits lends its
# CPUs so nested tasks cannot deadlock.
# Included by _runtime.pyx: one extension module, one concern per file.


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
            % (s["workers"], s["max_workers"], s["queued"] + s["waiting_for_resources"]))
    return 0


cdef inline int64_t _slice(int64_t deadline, int64_t most):
    """How long the next wait may sleep: most, or less by the deadline (-1:
    none); 0 once the deadline has passed."""
    cdef int64_t left
    if deadline < 0:
        return most
    left = deadline - nr_now_ns()
    return 0 if left <= 0 else min(left, most)


cdef int _wait_one(Region reg, uint64_t oid, int64_t deadline) except -1:
    """0 when sealed, 1 on timeout.  Inside a task, lends the task's CPUs."""
    cdef int st = nr_object_info(&reg.r, oid, NULL, NULL)
    if st != NR_OBJ_PENDING:
        if st < 0:
            raise _exc.ObjectLostError("nanoray: object %016x is gone (freed or never existed)" % oid)
        return 0
    cdef int rc
    cdef int64_t slice_ns, spin = GET_SPIN_NS
    cdef bint timed = deadline >= 0
    cdef unsigned long tag = _wait_enter(reg, timed)
    cdef int64_t stuck_since = 0
    try:
        while True:
            slice_ns = _slice(deadline, WAIT_SLICE_NS)
            if slice_ns == 0:
                return 1
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


# Timeouts longer than this (about 31 years, inf included) wait forever.
FOREVER_S = 1e9


cdef int64_t _deadline(timeout) except? -2:
    """The monotonic deadline in ns for a timeout in seconds; -1: none."""
    if timeout is None:
        return -1
    if isinstance(timeout, bool) or not isinstance(timeout, _numbers.Real):
        raise TypeError("timeout must be a number of seconds or None, got %r"
                        % (type(timeout).__name__,))
    cdef double t = float(timeout)
    if t != t:
        raise ValueError("timeout must be a number of seconds or None, got nan")
    if t < 0 or t > FOREVER_S:               # negative: wait forever, as Ray's get()
        return -1
    return nr_now_ns() + <int64_t>(t * 1e9)


cdef inline Region _check_ref(object ref):
    if type(ref) is not ObjectRef:
        raise TypeError("expected an ObjectRef, got %r" % (type(ref).__name__,))
    cdef Region reg = (<ObjectRef>ref)._reg
    if reg is not _region or reg is None:
        raise _exc.RaySystemError(
            "nanoray: this ObjectRef belongs to a runtime that was shut down")
    return reg


cdef object _get_one(ObjectRef ref, int64_t deadline, bint cow=False):
    cdef Region reg = _check_ref(ref)
    cdef bint is_error = False
    if _wait_one(reg, ref._id, deadline):
        raise _exc.GetTimeoutError("Get timed out: some object(s) not ready.")
    value = _value(reg, ref._id, &is_error, cow)
    if is_error:
        _mark_seen(ref)                   # raised here: not reported when dropped
        if isinstance(value, _exc.RayTaskError):
            raise value.as_instanceof_cause()
        raise value
    return value


# A get of many results first sleeps on the last one still pending, and
# looks at the others in order after TAIL_SLICE_NS, then after twice as
# long each time, up to TAIL_SLICE_MAX_NS: tasks finish about in the order
# they were submitted, so it is woken about once per slice, not once per
# result (each wake-up takes a CPU from the workers sealing them), and an
# error in front is still seen within milliseconds.
TAIL_SLICE_NS = 1000 * 1000
TAIL_SLICE_MAX_NS = 16 * 1000 * 1000


cdef inline int _state(object ref):
    """The state of ref's object; -1 for anything that is not a live local ref."""
    if type(ref) is not ObjectRef or (<ObjectRef>ref)._reg is not _region or _region is None:
        return -1
    return nr_object_info(&(<ObjectRef>ref)._reg.r, (<ObjectRef>ref)._id, NULL, NULL)


cdef Py_ssize_t _wait_tail(object refs, int64_t deadline) except -2:
    """Sleeps until the last pending ref of refs is sealed.  Returns the
    index of a ref whose object failed, seen meanwhile (get raises it at
    once, without waiting for the refs before it, as Ray does), else -1: at
    the end, at the deadline, or on anything unusual, which the ordered gets
    that follow then report.  Not inside pool tasks, whose waits lend CPUs
    (_wait_one)."""
    cdef Py_ssize_t n = len(refs), p = 0, j, i
    cdef int st, rc
    cdef int64_t slice_ns, most = TAIL_SLICE_NS
    cdef uint32_t errors
    cdef ObjectRef last
    cdef Region reg                       # last's: alive while last is, shut down or not
    if n < 2 or _in_task or _region is None:
        return -1
    errors = _region.r.hdr.errors
    j = n - 1
    if errors:
        # Some object failed in this runtime already: the first of these
        # that has (in list order, as Ray raises), and the last pending one.
        j = -1
        for i in range(n):
            st = _state(refs[i])
            if st < 0:
                return -1
            if st == NR_OBJ_PENDING:
                j = i
            elif st != NR_OBJ_READY:
                return i
    else:
        while j >= 0:
            st = _state(refs[j])
            if st < 0:
                return -1
            if st == NR_OBJ_PENDING:
                break
            j -= 1
    if j < 0:
        return -1                         # all sealed
    last = refs[j]
    reg = last._reg
    while True:
        while p < j:                      # the sealed ones in front: stop at an error
            st = _state(refs[p])
            if st == NR_OBJ_PENDING:
                break
            if st != NR_OBJ_READY:
                return p if st > 0 else -1
            p += 1
        if reg.r.hdr.errors != errors:
            # Some object failed since the last look (any in the runtime):
            # one of these behind a pending one?  The first in list order.
            errors = reg.r.hdr.errors
            for i in range(p, j + 1):
                st = _state(refs[i])
                if st != NR_OBJ_PENDING and st != NR_OBJ_READY:
                    return i if st > 0 else -1
        slice_ns = _slice(deadline, most)
        if slice_ns == 0:
            return -1
        with nogil:
            rc = nr_object_wait(&reg.r, last._id, slice_ns, 0)
        if rc == 0 and reg.r.hdr.errors != errors:
            continue                      # sealed, and something failed: look first
        if rc != 1:                       # sealed (0), or gone or shut down (-1)
            return -1
        most = min(2 * most, TAIL_SLICE_MAX_NS)
        PyErr_CheckSignals()
        if _liveness_check is not None:
            _liveness_check()


def get(object refs, timeout=None, bint cow=False):
    """Values of a sequence of refs, in order (the API layer validates);
    cow: arrays as writable copy-on-write views.  A failed one raises as
    soon as it is seen failed, though refs before it are still pending."""
    cdef int64_t deadline = _deadline(timeout)
    cdef Py_ssize_t failed = _wait_tail(refs, deadline)
    if failed >= 0:
        _get_one(refs[failed], deadline, cow)    # raises its error
    return [_get_one(r, deadline, cow) for r in refs]


def get_one(ObjectRef ref, timeout=None, bint cow=False):
    return _get_one(ref, _deadline(timeout), cow)


def wait(list refs, int num_returns, timeout):
    """Indices of the first num_returns sealed refs (input order)."""
    cdef Py_ssize_t n = len(refs), i
    if n == 0:
        return []
    cdef Region reg = _check_ref(refs[0])
    cdef uint64_t *ids = <uint64_t *>malloc(n * 8)
    cdef uint8_t *ready = <uint8_t *>malloc(n)
    if ids == NULL or ready == NULL:
        free(ids)
        free(ready)
        raise MemoryError()
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
                # Looked at: a failure it holds is not "unhandled" (as Ray).
                # errors moves before a failed state shows (nri_seal).
                if reg.r.hdr.errors:
                    _mark_seen(<ObjectRef>refs[i])
                else:
                    (<ObjectRef>refs[i])._seen = True
        return out
    finally:
        if entered:
            _wait_exit(reg, tag, timed)
        free(ids)
        free(ready)



# --------------------------------------------------------------------------
# Futures and await: one watcher thread per process


cdef class _Watcher:
    """Waits, in one thread, for every ref that a future() or an await is
    pending on, and calls their callbacks as the refs seal.  A new ref
    interrupts the wait (cancel word + poke) so it is watched at once."""

    def add(self, ObjectRef ref, callback):
        with self.cond:
            entry = self.pending.get(ref._id)
            if entry is None:
                self.pending[ref._id] = [ref, callback]
            else:
                entry.append(callback)
            if _in_task:
                self.task_seq = _task_seq   # the running task waits through it
            if self.thread is None:
                self.thread = threading.Thread(target=self.run, name="nanoray-ref-watcher",
                                               daemon=True)
                self.thread.start()
            self.cancel = 1
            self.cond.notify()
        nr_poke_waiters(&self.reg.r)

    def run(self):
        cdef uint64_t *ids = NULL
        cdef uint8_t *ready = NULL
        cdef int n, i, k
        cdef int64_t slice_ns = WAIT_SLICE_NS
        cdef unsigned long tag
        cdef Region reg = self.reg
        try:
            while True:
                with self.cond:
                    while not self.pending:
                        if reg.r.hdr.shutdown or _watcher is not self:
                            self.thread = None
                            return             # lets go of the region after shutdown
                        self.cond.wait(0.5)
                    keys = list(self.pending)
                    self.cancel = 0
                n = len(keys)
                free(ids)
                free(ready)
                ids = <uint64_t *>malloc(8 * n + 8)
                ready = <uint8_t *>malloc(n + 1)
                if ids == NULL or ready == NULL:
                    raise MemoryError()
                for i in range(n):
                    ids[i] = keys[i]
                # While the running task has futures or awaits pending, its
                # CPUs are lent, as for a get(): however it blocks on them
                # (result(), concurrent.futures.wait, as_completed, an event
                # loop), its nested tasks can run.  The price: a task that
                # computes while its futures are pending shares its CPU.
                tag = 0
                if _in_task and self.task_seq == _task_seq:
                    tag = _wait_enter(reg, False)
                try:
                    with nogil:
                        k = nr_wait_many_or(&reg.r, ids, n, 1, slice_ns, 0, ready, &self.cancel)
                finally:
                    _wait_exit(reg, tag, False)
                done = []
                with self.cond:
                    for i in range(n):
                        if ready[i] or reg.r.hdr.shutdown:
                            entry = self.pending.pop(keys[i], None)
                            if entry is not None:
                                done.append(entry)
                for entry in done:
                    for cb in entry[1:]:
                        try:
                            cb(entry[0])
                        except BaseException:
                            pass
                # Hold no ref while waiting for the next ones: a ref handed
                # out must leave the store when its user drops it.
                done = entry = cb = None
                if reg.r.hdr.shutdown:
                    return
        finally:
            free(ids)
            free(ready)


cdef _Watcher _watcher = None


cdef void _watch(ObjectRef ref, callback) except *:
    """Calls callback(ref) from the watcher thread once ref is sealed (at
    once, here, when it already is)."""
    global _watcher
    cdef Region reg = _check_ref(ref)
    if nr_object_info(&reg.r, ref._id, NULL, NULL) != NR_OBJ_PENDING:
        callback(ref)
        return
    cdef _Watcher w = _watcher
    if w is None or w.reg is not reg or w.pid != _pid:
        w = _Watcher.__new__(_Watcher)
        w.reg = reg
        w.pid = _pid
        w.cond = threading.Condition()
        w.pending = {}
        _watcher = w
    w.add(ref, callback)


def _loop_ready(fut):
    if not fut.done():
        fut.set_result(None)


async def _await_ref(ObjectRef ref):
    """`await ref`: suspends until the ref seals (no thread of its own), then
    reads the value in the awaiting thread.  In a task, its CPUs are lent
    while it is suspended, as for a get()."""
    import asyncio
    cdef Region reg = _check_ref(ref)
    cdef unsigned long tag
    if nr_object_info(&reg.r, ref._id, NULL, NULL) == NR_OBJ_PENDING:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        _watch(ref, lambda _r: loop.call_soon_threadsafe(_loop_ready, fut))
        tag = _wait_enter(reg, False)
        try:
            await fut
        finally:
            _wait_exit(reg, tag, False)
    return get_one(ref, None)


_RefFuture = None


def _ref_future_class():
    """concurrent.futures.Future whose blocking result() and exception()
    lend the running task's CPUs while they wait, as a get() does."""
    global _RefFuture
    if _RefFuture is None:
        import concurrent.futures

        class RefFuture(concurrent.futures.Future):
            def result(self, timeout=None):
                return _lending(super().result, timeout, self)

            def exception(self, timeout=None):
                return _lending(super().exception, timeout, self)
        _RefFuture = RefFuture
    return _RefFuture


def _lending(method, timeout, fut):
    cdef Region reg = _region
    cdef unsigned long tag = 0
    if reg is not None and not fut.done():
        tag = _wait_enter(reg, timeout is not None)
    try:
        return method(timeout)
    finally:
        if tag:
            _wait_exit(reg, tag, timeout is not None)
