# Generator tasks: values sent to the caller as they are yielded.
# Included by _runtime.pyx: one extension module, one concern per file.
#
# A streaming generator (Ray's default for generator functions; also
# num_returns="streaming") has one return object, the first *cell* of a
# chain.  Each yield stores the value as an object of its own, creates the
# next cell (pending, so the caller can wait for it) and seals the current
# cell with (value ref, next cell ref): the payload counts both.  The last
# cell is sealed with None; an exception stores the error as an object and
# seals the cell with (error ref, None), so the caller meets it at the item
# where it happened and keeps every value yielded before it.
#
#   ret0 = cell0 ──seal──► (v0, cell1) ──► (v1, cell2) ──► ... ──► None
#
# The task's second return is sealed with None once the stream has ended
# (with an exception too): ObjectRefGenerator.completed().  A death fails it
# as it fails any return, unless the task runs again.
#
# The caller's ObjectRefGenerator (nanoray/_generator.py) holds only the
# current cell; the cells it passed are freed.  A task's spec records its
# pending cell and the values yielded, in the section that seals the cell
# before (nr_stream_seal).  If its worker dies and max_retries allows, it
# runs again, as in Ray: the re-run skips as many values as were yielded,
# then goes on from the pending cell, so the caller sees each value once
# (a re-run that yields fewer fails with StreamingGeneratorReplayInconsistentError).
# Otherwise the pending cell is sealed as an error when the process is
# reaped (lost_task), so the caller never hangs.  An actor method's stream
# is the same: its call runs again on the restarted actor while
# max_task_retries allows (nr_actor_reap), else its pending cell fails with
# the actor's death.

import types as _types

_GeneratorType = _types.GeneratorType     # a C global (stream.pxd): read per task


cdef class _Stream:
    """The yielding side of one streaming generator task."""

    def __cinit__(self, Region reg, uint32_t t, uint64_t first_cell, str name):
        self.reg = reg
        self.t = t
        self.cell = first_cell
        self.cell_ref = None
        self.name = name
        cdef nr_spec_t *spec = <nr_spec_t *>(reg.r.base + nr_task(&reg.r, t).spec)
        self.done = nr_spec_ids(spec)[1] if spec.nret >= 2 else 0
        if spec.stream_cell:               # a re-run: resume where the last one was
            self.cell = spec.stream_cell
            self.skip = spec.streamed

    cdef void emit(self, object value) except *:
        cdef Region reg = self.reg
        cdef _Pickled p
        cdef uint64_t off
        if self.skip:                  # the caller has this one from an earlier run
            self.skip -= 1
            return
        item = put_pickled(reg, _pickle(value, False))
        cdef uint64_t nxt = nr_object_create(&reg.r)
        if nxt == 0:
            raise _table_full(reg)
        nref = _adopt(reg, nxt)
        p = _pickle((item, nref), False)
        off = _store(reg, p)
        if nr_stream_seal(&reg.r, self.t, self.cell, off, p.size, nxt) != 0:
            nr_arena_free(&reg.r, off)
        self.cell = nxt
        self.cell_ref = nref           # dropped when the next cell replaces it

    cdef void fail(self, object failure, bint ran=True) except *:
        """The stream ends with failure: raised by the generator (ran), or
        before it could run (cancelled, an argument failed)."""
        # completed() raises too when the stream did not end by itself: it
        # never ran, or nanoray.cancel() stopped it (as in Ray).
        ending = None if ran and not nr_task(&self.reg.r, self.t).cancelled else failure
        err = _error_ref(self.reg, failure, self.name)
        if err is None:
            _seal(self.reg, self.cell, failure, True, self.name)   # the cell itself raises
        else:
            if ending is not None:
                # Reported with the completion, if unheard: seen for every
                # copy (a reader's drop of the generator between the two
                # seals would report the item, and the completion again).
                _mark_seen(<ObjectRef>err)
            _seal(self.reg, self.cell, (err, None), False, self.name)
            # This process's counts go at once, the cell's first (it holds
            # the item): the reader's drop of the item can then be the last,
            # which reports it if unread.
            self.cell_ref = None
            err = None
        self.finished(ending)

    cdef void finished(self, object failure=None) except *:
        """Seals the task's completion return, with None or failure (once: a
        re-run after a death between the two seals finds it sealed)."""
        if self.done and nr_object_info(&self.reg.r, self.done, NULL, NULL) == NR_OBJ_PENDING:
            if failure is None:
                _seal(self.reg, self.done, None, False, self.name)
            else:
                _seal_failure(self.reg, self.done, failure, self.name)

    cdef void end(self) except *:
        if self.skip:                  # the re-run ended before the values already sent
            self.fail(_exc.StreamingGeneratorReplayInconsistentError(
                "nanoray: %s() was run again after its worker died and yielded %d values "
                "fewer than its first run had; a generator that is retried must yield the "
                "same values each run" % (self.name, self.skip)))
            return
        _seal(self.reg, self.cell, None, False, self.name)
        self.finished()


cdef object _END = object()


cdef object _next_value(_Call c, object it):
    """next(it) as the task's own code (cancel may interrupt it); _END at
    the end.  A cancelled actor call's generator (not interrupted) ends at
    its next value: what is left fails with TaskCancelledError, as in Ray."""
    global _in_user_code
    if c.kind != NR_SPEC_ACTOR_CREATE and nr_task(&_region.r, c.t).cancelled:
        raise KeyboardInterrupt            # a cancel that arrived outside its own code
    _in_user_code = c.kind == NR_SPEC_TASK
    try:
        value = next(it)
    except StopIteration:
        return _END
    finally:
        _in_user_code = False
    if c.kind != NR_SPEC_ACTOR_CREATE and nr_task(&_region.r, c.t).cancelled:
        raise KeyboardInterrupt            # made after the cancel: not delivered
    return value


cdef object _each(_Call c, object gen, object consume):
    """Feeds each value gen yields to consume(value), running the generator
    as the task's own code (cancel may interrupt it).  Returns None at its
    end, or the error that ended it (a failure for the caller; SystemExit
    marks the process to exit)."""
    try:
        it = iter(gen)
        while True:
            value = _next_value(c, it)
            if value is _END:
                return None
            consume(value)
    except SystemExit as e:
        _exiting(c, e)
        return _exit_failure(c)
    except BaseException as e:
        return _failure_of(e, c.name)


cdef object _exit_failure(_Call c):
    """What the stream of a generator that called sys.exit() ends with: a
    task's process exits (a crash, re-run while retries allow); an actor
    exits on purpose, for good, as with exit_actor()."""
    if c.kind == NR_SPEC_TASK:
        return _exc.WorkerCrashedError("The generator called sys.exit(); its process exited.")
    return _exc.ActorDiedError("The actor %s exited on purpose (sys.exit(0) in its generator "
                               "method %s): no more calls run on it." % (_actor_name, c.name))


cdef ObjectRef _error_ref(Region reg, object failure, str name):
    """A new object holding failure (None when the table is full)."""
    cdef uint64_t eid = nr_object_create(&reg.r)
    if eid == 0:
        return None
    err = _adopt(reg, eid)
    _seal_failure(reg, eid, failure, name)
    return err


cdef void _stream_sync(Region reg, _Call c, object gen, uint64_t first_cell) except *:
    """Runs a streaming generator to its end (or its first exception)."""
    cdef _Stream s = _Stream(reg, c.t, first_cell, c.name)
    if c.failure is not None:
        s.fail(c.failure, False)
        return
    if type(gen) is not _GeneratorType and not hasattr(gen, "__next__"):
        s.emit(gen)                    # a plain value: a stream of one, as Ray does
        s.end()
        return
    failure = _each(c, gen, lambda value: s.emit(value))
    if failure is None:
        s.end()
    elif c.exit_worker and (c.kind == NR_SPEC_TASK or c.exit_crash):
        return                         # sys.exit(): as a death, re-run while retries allow
    else:
        s.fail(failure)


cdef object _dynamic_refs(Region reg, _Call c, object gen):
    """num_returns="dynamic": every yielded value stored; an exception is
    one more item, the last.  Returns the refs in order."""
    refs = []
    failure = _each(c, gen, lambda value: refs.append(put_pickled(reg, _pickle(value, False))))
    if c.exit_worker:
        return None                        # sys.exit(): the process ends, the task is retried
    if failure is not None:
        err = _error_ref(reg, failure, c.name)
        if err is None:
            raise _table_full(reg)
        refs.append(err)
    from nanoray._generator import DynamicObjectRefGenerator
    return DynamicObjectRefGenerator(refs)


cdef void _static_returns(Region reg, _Call c, object gen, uint64_t *ids) except *:
    """A generator with a fixed num_returns: its values are sealed once it
    has ended, as in Ray (a re-run after its worker died then never mixes
    two runs' values); an exception fails only the returns it did not
    yield.  Once all were yielded, what goes wrong after (an exception, one
    value too many) is only logged, as in Ray: the caller keeps them."""
    cdef uint32_t nret = c.nret, j
    values = []

    def take(value):
        if len(values) >= nret:
            raise ValueError("the generator yielded more than num_returns=%d values" % nret)
        values.append(value)
    if nret == 0:                          # num_returns=0: run it, keep nothing
        _each(c, gen, lambda value: None)
        return
    failure = _each(c, gen, take)
    if c.exit_worker:
        return                             # its process ends: as a death
    if failure is None and len(values) < nret:
        failure = _failure_of(ValueError("the generator yielded %d values; num_returns is %d"
                                         % (len(values), nret)), c.name)
    cdef uint32_t n = len(values)
    for j in range(n):
        _seal(reg, ids[j], values[j], False, c.name)
    values = None
    if failure is None:
        return
    if n >= nret:
        try:
            sys.stderr.write("nanoray: %s() failed after yielding all num_returns=%d values; "
                             "they are kept, and the error is only logged: %s\n"
                             % (c.name, nret, failure))
            sys.stderr.flush()
        except Exception:
            pass
        return
    for j in range(n, nret):
        _seal_failure(reg, ids[j], failure, c.name)


def stream_async(Region reg, _Call c, object agen, uint64_t first_cell):
    """An async generator method of an async actor, streamed (awaitable)."""
    return _astream(reg, c, agen, first_cell)


async def _astream(Region reg, _Call c, object agen, uint64_t first_cell):
    cdef _Stream s = _Stream(reg, c.t, first_cell, c.name)
    try:
        async for value in agen:
            s.emit(value)
    except SystemExit as e:
        _exiting(c, e)
        if not c.exit_crash:           # a crash: as a death (its reap)
            s.fail(_exit_failure(c))
        return
    except BaseException as e:
        s.fail(_failure_of(e, c.name))
        return
    s.end()


cdef inline bint _failed_id(Region reg, uint64_t oid):
    cdef nr_object_t *o = nr_object_lookup(&reg.r, oid)
    return o != NULL and o.state == NR_OBJ_ERROR


cdef inline bint _failed(Region reg, object ref):
    return type(ref) is ObjectRef and _failed_id(reg, (<ObjectRef>ref)._id)


def failed_tail(ObjectRef cell, done):
    """The failed last item of a stream whose unread part starts at cell,
    as a ref of its own (None when the stream has not failed that way, or
    its completion failed too and reports it): a generator dropped before
    that item was read lets go of the cell first, and the item's drop is
    then the last, which reports it if nobody saw it (freed with the chain
    inside C, it went unreported).  Walks the sealed cells without reading
    their values: each holds (item, next cell), the failed one (error,)."""
    cdef Region reg = cell._reg
    cdef uint64_t cur = cell._id, data = 0, size = 0, file = 0, nxt, tail = 0
    cdef uint32_t spill = 0, steps = 0
    cdef int st
    cdef nr_payload_t *p
    if reg is None or reg is not _region or reg.pid != _pid or not reg.r.hdr.errors:
        return None
    if _failed(reg, done):
        return None
    while steps < (1u << 20):
        steps += 1
        data = 0
        st = nr_object_pin(&reg.r, cur, &data, &size, &spill, &file)
        if st < 0 or data == 0:
            break                            # pending (not failed yet), gone, or on disk
        p = <nr_payload_t *>(reg.r.base + data)
        nxt = nr_payload_contained(p)[1] if p.ncontained == 2 else 0
        if p.ncontained == 1 and st == NR_OBJ_READY:
            tail = nr_payload_contained(p)[0]
        nr_object_unpin(&reg.r, cur)
        if st != NR_OBJ_READY or not nxt:
            break
        cur = nxt
    if not tail or not _failed_id(reg, tail) or not nr_object_try_incref(&reg.r, tail, 0):
        return None
    return _adopt(reg, tail)
