# The worker side: running a task, sealing its returns, and the calls the
# zygote makes when a process dies (its functions: rt/functions.pyx).
# Included by _runtime.pyx: one extension module, one concern per file.


@cython.freelist(8)
cdef class _Call:
    """One task being run: what _prepare found, for _invoke and _complete
    (an async actor awaits between the two)."""


cdef _Call _prepare(Region reg, uint32_t t):
    """Loads the function (or actor method) and the arguments of task t."""
    global _in_task, _pool_task_id, _task_name
    cdef nr_task_t *task = nr_task(&reg.r, t)
    cdef nr_spec_t *spec = <nr_spec_t *>(reg.r.base + task.spec)
    cdef uint64_t *ids = nr_spec_ids(spec)
    cdef uint32_t nret = spec.nret, ndeps = spec.ndeps, i
    cdef bint is_error = False
    cdef _Call c = _Call.__new__(_Call)
    c.t = t
    c.t0 = nr_now_ns()
    c.kind = spec.kind
    if c.kind == NR_SPEC_TASK:
        _pool_task_id = ((<uint64_t>task.gen) << 32) | t   # one task at a time here
    else:
        _task_id.set(((<uint64_t>task.gen) << 32) | t)     # per coroutine / thread
    c.nret = nret
    c.name = "task"
    if c.kind == NR_SPEC_TASK:
        _in_task = True                  # get() inside it lends its CPUs
    if task.cancelled:                   # nanoray.cancel() came first: it never runs
        c.failure = _exc.TaskCancelledError(
            error_message="nanoray: task %016x was cancelled before it ran"
            % (((<uint64_t>task.gen) << 32) | t))
        return c
    try:
        if c.kind == NR_SPEC_TASK:
            c.func, c.name = _function_entry(reg, spec.func_id)
            _task_name = c.name
        if spec.args_obj:
            loaded = _value(reg, spec.args_obj, &is_error)
        else:
            loaded = _load(reg, 0, nr_spec_args(spec), True)
        if c.kind == NR_SPEC_TASK:
            if len(loaded) == 2:
                args, kwargs = loaded
            else:
                args, kwargs, extra, c.extras = loaded
                c.is_map = "map" in c.extras
                if "name" in c.extras:     # .options(name=)
                    c.name = _task_name = c.extras["name"]
        else:
            if len(loaded) == 3:
                args, kwargs, extra = loaded
            else:
                args, kwargs, extra, c.extras = loaded
            if c.kind == NR_SPEC_ACTOR_CREATE:
                c.func, c.name = _actor_constructor(_function(reg, spec.func_id), extra)
            else:
                c.func, c.name = _actor_method(extra)
                if c.extras is not None and "name" in c.extras:    # .options(name=)
                    c.name = c.extras["name"]
        if ndeps:
            vals = []
            cow = c.extras is not None and c.extras.get("writable_args", False)
            for i in range(ndeps):
                v = _value(reg, ids[nret + i], &is_error, cow)
                if is_error:
                    c.failure = _failed_arg(v, c.name)   # a failed argument fails this task too
                    # ...which carries it on: no copy of that ref reports it.
                    nr_object_mark_seen(&reg.r, ids[nret + i], 0)
                    return c
                vals.append(v)
            args = tuple([vals[(<_DepArg>a).i] if type(a) is _DepArg else a for a in args])
            if kwargs:
                kwargs = {k: (vals[(<_DepArg>a).i] if type(a) is _DepArg else a)
                          for k, a in kwargs.items()}
        c.args = args
        c.kwargs = kwargs
        if c.extras is not None and c.extras.get("writable_args", False):
            _writable_by_value(reg, spec.args_obj, c)
    except SystemExit as e:
        _exiting(c, e)
    except BaseException as e:
        c.failure = _failure_of(e, c.name)
    return c


cdef void _exiting(_Call c, e) noexcept:
    """c raised SystemExit e: its process ends, an actor's on purpose only
    with code 0 (sys.exit(0), exit_actor()), as Ray reads the code."""
    c.exit_worker = True
    try:
        c.exit_crash = not (e.code is not None and e.code == 0)
    except Exception:
        c.exit_crash = True


cdef inline bint _exits_on_purpose(_Call c):
    """An actor's call raised SystemExit with code 0: the actor ends for good."""
    return c.exit_worker and c.kind != NR_SPEC_TASK and not c.exit_crash


cdef object _invoke(_Call c):
    """Calls it; an exception becomes c.failure (or c.exit_worker)."""
    if c.failure is not None or c.exit_worker:
        return None
    global _in_user_code
    cdef bint interruptible = c.kind == NR_SPEC_TASK
    try:
        if interruptible:
            if nr_task(&_region.r, c.t).cancelled:
                raise KeyboardInterrupt    # cancelled while its arguments were loaded
            if c.is_map:
                _run_map(_region, c)       # seals each item's return itself
                return None
            _in_user_code = True
            try:
                return c.func(*c.args, **c.kwargs) if c.kwargs else c.func(*c.args)
            finally:
                _in_user_code = False
        value = c.func(*c.args, **c.kwargs) if c.kwargs else c.func(*c.args)
        if c.kind == NR_SPEC_ACTOR_CALL and nr_task(&_region.r, c.t).cancelled and \
                (c.extras is None or c.extras.get("gen") is None) and \
                not _actor_opts.get("is_async"):
            # Cancelled while it ran (a sync actor's call is not interrupted;
            # an async one's coroutine is cancelled): its returns raise
            # TaskCancelledError, as in Ray.
            c.failure = _exc.TaskCancelledError(
                error_message="nanoray: actor call %s() was cancelled while it ran" % c.name)
            return None
        return value
    except SystemExit as e:
        # As in Ray: the worker exits; a task is retried (max_retries) or
        # fails with WorkerCrashedError; an actor exits on purpose with
        # code 0 (exit_actor() too), and crashes with any other (restarted
        # while max_restarts allows).  Never re-raised in the driver, where
        # it would end the program silently.
        _exiting(c, e)
    except BaseException as e:
        c.raised = e
        c.failure = _failure_of(e, c.name)
    return None


cdef object _only_value(object gen):
    """What f.remote gives for a function returning a generator object: its
    one value (num_returns=1), as _static_returns does."""
    vals = []
    for v in gen:
        if vals:
            raise ValueError("the generator yielded more than num_returns=1 values")
        vals.append(v)
    if not vals:
        raise ValueError("the generator yielded 0 values; num_returns is 1")
    return vals[0]


cdef void _writable_by_value(Region reg, uint64_t args_obj, _Call c) except *:
    """writable_args: the top-level arrays passed by value become writable
    too (those passed as refs came as copy-on-write views already): a
    copy-on-write view of the call's argument object for a large one, a copy
    of a small one (inline arguments were copied out of the spec)."""
    np = sys.modules.get("numpy")
    if np is None:
        return                             # no numpy: no arrays
    if c.is_map:
        c.args = ([tuple([_writable(reg, args_obj, np, v) for v in item])
                   for item in c.args[0]],)
    else:
        c.args = tuple([_writable(reg, args_obj, np, v) for v in c.args])
    if c.kwargs:
        c.kwargs = {k: _writable(reg, args_obj, np, v) for k, v in c.kwargs.items()}


cdef void _run_map(Region reg, _Call c) except *:
    """A chunk of f.map(): func(*item) for each item, in order, each value
    sealed as soon as it returns, as f.remote's would be.  An item that
    raises fails its own return (retried first, as its options say:
    retry_exceptions with max_retries per item, on arguments loaded afresh).
    A cancel fails the items not done; SystemExit ends the worker, and a
    re-run of the chunk skips the items already sealed.  max_retries is each
    item's, for its exception retries and its deaths together, as f.remote's
    is: a re-run charges the death to the item that was running
    (_charge_death), and the chunk's task is re-run while the items' budgets
    allow (_submit_chunk)."""
    global _in_user_code
    cdef nr_task_t *task = nr_task(&reg.r, c.t)
    cdef nr_spec_t *spec = <nr_spec_t *>(reg.r.base + task.spec)
    cdef uint64_t *ids = nr_spec_ids(spec)
    cdef list items = c.args[0]
    cdef Py_ssize_t i, j, n = len(items)
    cdef int retries = c.extras.get("retries", 0)
    cdef _Call fresh
    func = c.func
    allowed = c.extras.get("retry_exceptions")
    if task.attempts > 1:
        _charge_death(reg, spec, ids, n, retries, c.name)
    for i in range(n):
        if nr_object_info(&reg.r, ids[i], NULL, NULL) != NR_OBJ_PENDING:
            continue                       # a run before this one sealed it
        while True:
            try:
                if task.cancelled:
                    raise KeyboardInterrupt
                _in_user_code = True
                v = func(*<tuple>items[i])
                if type(v) is _GeneratorType:
                    v = _only_value(v)
                _in_user_code = False
            except SystemExit as e:
                _in_user_code = False
                _exiting(c, e)
                return
            except KeyboardInterrupt as e:
                _in_user_code = False
                failure = _failure_of(e, c.name)
                if not task.cancelled:     # raised by the item itself: its own failure
                    _seal_failure(reg, ids[i], failure, c.name)
                    break
                for j in range(i, n):      # cancelled: this item and the rest
                    if nr_object_info(&reg.r, ids[j], NULL, NULL) == NR_OBJ_PENDING:
                        _seal_failure(reg, ids[j], failure, c.name)
                return
            except BaseException as e:
                _in_user_code = False
                failure = None
                if (allowed and (retries < 0 or _item_used(spec, i) < <uint32_t>retries)
                        and isinstance(e, Exception)
                        and (allowed is True or isinstance(e, allowed))):
                    _item_use(spec, i)
                    fresh = _reload(reg, c)    # as f.remote's retry: arguments loaded again
                    if fresh.failure is None:
                        items = fresh.args[0]
                        continue
                    failure = fresh.failure    # they no longer load
                _seal_failure(reg, ids[i], failure if failure is not None else
                              _failure_of(e, c.name), c.name)
                break
            _seal(reg, ids[i], v, False, c.name)
            v = None
            break


# An f.map() chunk's items run in order, each sealed as it returns, so only
# the item running has retries in use: spec.streamed counts them (deaths and
# exception retries) as (index + 1) << 32 | used.  Written by the worker
# running the chunk (no other process touches a running task's spec).
cdef inline uint32_t _item_used(nr_spec_t *spec, Py_ssize_t i):
    return <uint32_t>(spec.streamed & 0xffffffff) if spec.streamed >> 32 == <uint64_t>(i + 1) else 0


cdef inline uint32_t _item_use(nr_spec_t *spec, Py_ssize_t i):
    cdef uint32_t used = _item_used(spec, i) + 1
    spec.streamed = (<uint64_t>(i + 1) << 32) | used
    return used


cdef void _charge_death(Region reg, nr_spec_t *spec, uint64_t *ids, Py_ssize_t n, int retries,
                        str name) except *:
    """A re-run of an f.map() chunk: the run before it died in its first
    unsealed item, which is charged a retry; past max_retries the item
    fails as a task's lost worker fails it, and the chunk goes on with the
    next."""
    cdef Py_ssize_t i
    for i in range(n):
        if nr_object_info(&reg.r, ids[i], NULL, NULL) == NR_OBJ_PENDING:
            break
    else:
        return
    if _item_use(spec, i) > <uint32_t>retries and retries >= 0:
        _seal(reg, ids[i], _exc.WorkerCrashedError(
            "The worker died unexpectedly while executing this item (killed, out of "
            "memory, crashed, or it called sys.exit()), and no retries were left."), True, name)


cdef bint _retry_exception(Region reg, _Call c) except -1:
    """The call raised an exception its options retry, and it has a retry
    left (taken now): run it again, in place, on arguments loaded afresh
    (reload_args)."""
    e = c.raised
    if e is None or c.extras is None:
        return False
    allowed = c.extras.get("retry_exceptions")
    if not allowed or isinstance(e, KeyboardInterrupt) or not isinstance(e, Exception):
        return False
    if allowed is not True and not isinstance(e, allowed):
        return False
    if _retire_after and c.kind == NR_SPEC_TASK:
        # max_calls reached: the retry runs in a fresh worker, as in Ray.
        # This one leaves without sealing; its reap queues the task again,
        # taking the retry then.
        if nr_task(&reg.r, c.t).retries_left != 0 and not nr_task(&reg.r, c.t).cancelled:
            c.exit_worker = True
        return False
    if not nr_task_use_retry(&reg.r, c.t):
        return False
    if c.kind == NR_SPEC_TASK:
        _count_call(reg, c)            # a retry here is one more call (max_calls)
    c.raised = c.failure = None
    return True


cdef _Call _reload(Region reg, _Call c):
    """A retry's call: function and arguments loaded again, so an attempt
    never sees what an earlier one did to them (as in Ray)."""
    return _prepare(reg, c.t)


cdef bint _finish_in_loop = False     # _loop runs the tasks (or a sync actor's calls) here
cdef uint32_t _unfinished = 0         # a task whose returns are sealed, not yet finished
# Its one return, when simple: written, and sealed by _loop in the section
# that finishes the task (0: none).
cdef uint64_t _unsealed_id = 0, _unsealed_off = 0, _unsealed_size = 0


cdef bint _write_unsealed(Region reg, uint64_t oid, object value) except -1:
    """Writes a task's one return, if it is simple (rt/simple.pyx), for
    _loop to seal as it finishes the task; False when it is not."""
    global _unsealed_id, _unsealed_off
    try:
        _unsealed_off = _store_simple(reg, value, &_unsealed_size)
    except Exception:
        return False                   # _seal seals the store's error
    if _unsealed_off:
        _unsealed_id = oid
    return _unsealed_off != 0


cdef void _seal_unsealed(Region reg) except *:
    """Seals the return _write_unsealed wrote, on its own."""
    global _unsealed_id
    cdef uint64_t oid = _unsealed_id
    _unsealed_id = 0
    if oid and nr_object_seal(&reg.r, oid, _unsealed_off, _unsealed_size, False) != 0:
        nr_arena_free(&reg.r, _unsealed_off)


cdef void _complete(Region reg, _Call c, object result) except *:
    """Seals the returns of c (its value, or its failure) and finishes the task
    (or leaves that to _loop, which takes the next one in the same step)."""
    global _in_task, _unfinished, _born_lazy
    cdef nr_task_t *task = nr_task(&reg.r, c.t)
    cdef nr_spec_t *spec = <nr_spec_t *>(reg.r.base + task.spec)
    cdef uint64_t *ids = nr_spec_ids(spec)
    cdef uint32_t nret = c.nret, i
    cdef bint failed = c.failure is not None or c.raised is not None
    failure = c.failure
    try:
        if c.exit_worker:
            if _exits_on_purpose(c):
                _actor_exit(reg, c.t)      # never returns
            return                         # a crash: its reap fails or re-runs the call
        if c.kind == NR_SPEC_ACTOR_CREATE:
            if failure is not None:
                _actor_init_failed(reg, failure)
            return
        mode = c.extras.get("gen") if c.extras is not None else None
        if mode is not None and mode == "streaming":
            if not c.streamed:
                _stream_sync(reg, c, result, ids[0])
            if _exits_on_purpose(c):
                _actor_exit(reg, c.t)      # sys.exit(0) in an actor's generator: never returns
            return
        if mode is not None and mode == "dynamic" and failure is None:
            result = _dynamic_refs(reg, c, result)
            if c.exit_worker:
                if _exits_on_purpose(c):
                    _actor_exit(reg, c.t)  # sys.exit(0) in an actor's generator: never returns
                return
            if task.cancelled:             # its return fails whole, as in Ray
                result = None
                failure = _failure_of(KeyboardInterrupt(), c.name)
        elif failure is None and type(result) is _GeneratorType:
            _static_returns(reg, c, result, ids)
            if _exits_on_purpose(c):
                _actor_exit(reg, c.t)      # sys.exit(0) in an actor's generator: never returns
            return
        if c.is_map and failure is None:
            return                       # _run_map sealed each item's return
        if failure is None and nret != 1:
            try:
                result = tuple(result)
                if len(result) != nret:
                    raise ValueError("the task returned %d values; num_returns is %d" % (len(result), nret))
            except Exception as e:
                failure = _exc.RayTaskError(c.name, _format_tb(e), e, os.getpid())
        # Results born here are handed to the store without remapping them
        # (no user code runs from here on, in this process's only thread);
        # those the task kept are remapped copy-on-write once _run_task has
        # dropped its result (rt/born.pyx, nr_born_settle).
        _born_lazy = _born_on            # (what else it takes: _born_refs)
        for i in range(nret):
            if failure is not None:
                _seal_failure(reg, ids[i], failure, c.name)
            elif nret == 1 and _finish_in_loop and c.kind != NR_SPEC_ACTOR_CREATE:
                if not _write_unsealed(reg, ids[0], result):   # else sealed as it is finished
                    _seal(reg, ids[0], result, False, c.name, False)
            else:
                _seal(reg, ids[i], result if nret == 1 else result[i], False, c.name)
    finally:
        _born_lazy = False
        c.args = c.kwargs = c.failure = c.raised = None
        result = failure = None
        if c.kind == NR_SPEC_TASK:
            _in_task = False
        if c.exit_worker:
            from nanoray import _output
            _output.flush_all()
            os._exit(1)
        # Whatever escaped above, no return may stay pending (its getters
        # would wait forever): seal it with no payload, read back as a
        # system error.
        for i in range(nret):
            if ids[i] != _unsealed_id and nr_object_info(&reg.r, ids[i], NULL, NULL) == NR_OBJ_PENDING:
                nr_object_seal(&reg.r, ids[i], 0, 0, 1)
        if c.kind == NR_SPEC_TASK:
            _task_ended(reg)
        try:
            _record_event(reg, c, task, spec, failed)
        except Exception:
            pass
        if _finish_in_loop and c.kind != NR_SPEC_ACTOR_CREATE:
            _unfinished = c.t          # _loop finishes it and takes the next at once
        else:
            nr_task_finish(&reg.r, _slot, c.t)


cdef dict _event_names = {}             # a task's name -> its bytes for the event


cdef void _record_event(Region reg, _Call c, nr_task_t *task, nr_spec_t *spec,
                        bint failed) except *:
    """One event for nanoray.timeline(): when it ran, its name, and the bytes
    of its arguments and returns (read from their entries: no lock)."""
    cdef uint64_t *ids = nr_spec_ids(spec)
    cdef uint64_t size = 0, bytes_in = spec.args_len, bytes_out = 0
    cdef uint32_t i
    if spec.args_obj and nr_object_info(&reg.r, spec.args_obj, NULL, &size) >= 0:
        bytes_in += size
    for i in range(spec.ndeps):
        size = 0
        if nr_object_info(&reg.r, ids[spec.nret + i], NULL, &size) >= 0:
            bytes_in += size
    for i in range(spec.nret):
        size = 0
        if ids[i] == _unsealed_id:
            bytes_out += _unsealed_size
        elif nr_object_info(&reg.r, ids[i], NULL, &size) >= 0:
            bytes_out += size
    cdef bytes name = _event_names.get(c.name)
    if name is None:
        name = c.name.rpartition("<locals>.")[2].encode("utf-8", "replace")[:67]
        name = name.decode("utf-8", "ignore").encode("utf-8")   # not cut inside a character
        if len(_event_names) < 4096:
            _event_names[c.name] = name
    nr_event_record(&reg.r, ((<uint64_t>task.gen) << 32) | c.t, c.kind, c.t0, nr_now_ns(),
                    bytes_in, bytes_out, failed, _pid, name, len(name))


# The running task's id: a context variable, so that each coroutine of an
# async actor (and each thread) sees its own.
_task_id = _contextvars.ContextVar("nanoray_task_id", default=None)


cdef uint64_t _pool_task_id = 0
cdef str _task_name = ""               # the pool task this process runs (or ran last)


def output_name():
    """What prefixes this worker's printed lines: its actor's class, or its
    task's function (nanoray/_output.py)."""
    if _actor_process:
        return _actor_name
    return _task_name.rpartition(".")[2]


def current_task():
    """The id of the task this code runs in, None outside tasks."""
    if _in_task:
        return _pool_task_id
    return _task_id.get()


cdef int _task_threads = 0            # BLAS/OpenMP threads set for tasks (0: none yet)


cdef void _run_task(Region reg, uint32_t t) except *:
    global _task_threads
    cdef _Call c = _prepare(reg, t)
    if c.extras is not None and c.kind == NR_SPEC_TASK:
        _count_call(reg, c)            # max_calls
    _born_check()                      # this thread's large arrays: born in the arena
                                       # (after _prepare: loading it may import numpy)
    cdef int cpus = 0
    cdef uint32_t gpus = 0
    if c.kind == NR_SPEC_TASK:
        cpus = max(1, nr_task(&reg.r, t).cpus // 1000)
        gpus = nr_task(&reg.r, t).gpu_mask
    env = c.extras.get("env") if c.extras is not None else None
    pg = c.extras.get("pg") if c.extras is not None else None
    if pg is not None:                 # its placement group, for what it submits
        from nanoray import _runtime_env
        saved_pg = _runtime_env.current_pg
        _runtime_env.set_current_pg(pg)
    token = None
    if env is not None and c.failure is None:
        from nanoray import _runtime_env
        try:
            if c.kind == NR_SPEC_TASK and not _actor_process:
                _runtime_env.keep(env)     # this worker runs that environment alone
            else:
                token = _runtime_env.apply(env)
        except Exception as e:
            c.failure = _exc.RuntimeEnvSetupError(
                "nanoray: the runtime_env of %s() could not be applied: %s"
                % (c.name, _exc._safe_repr(e)))
    # BLAS/OpenMP threads: the CPUs it was granted (after its runtime_env,
    # whose env_vars may choose a count).  A C compare per task; Python only
    # on a change, and in each task of a runtime_env.
    if cpus and (cpus != _task_threads or env is not None):
        from nanoray._threads import limit
        limit(cpus)
        _task_threads = cpus
    if gpus:
        visible = _set_visible_gpus(gpus)
    try:
        result = _invoke(c)
        while c.raised is not None and _retry_exception(reg, c):
            c = _reload(reg, c)
            result = _invoke(c)
        _complete(reg, c, result)
    finally:                           # undone in the reverse order
        if _born_on:                   # results it kept: copy-on-write from now on
            result = None
            nr_born_settle()
        if gpus:
            _restore_visible_gpus(visible)
        if token is not None:
            _runtime_env.restore(token)
        if pg is not None:
            _runtime_env.set_current_pg(saved_pg)


cdef uint64_t _parent_task():
    """The id of the task running here, for the tasks it submits (cancel's
    recursion); 0 in the driver."""
    if _in_task:
        return _pool_task_id
    if _actor_process:
        t = _task_id.get()
        return t if t is not None else 0
    return 0


def task_cancel_requested():
    """True when nanoray.cancel() was called on the task running here."""
    cdef Region reg = _region
    t = current_task()
    if reg is None or t is None:
        return False
    cdef nr_task_t *task = nr_task(&reg.r, <uint32_t>(t & 0xFFFFFFFF))
    return task.gen == (t >> 32) and task.cancelled != 0


# Frames from these files are the runtime's, not the user's.
_RUNTIME_SOURCES = os.path.join("nanoray", "_core", "")


cdef str _format_tb(BaseException e):
    """The traceback of e from the user's code on (runtime frames dropped)."""
    tb = e.__traceback__
    while tb is not None and _RUNTIME_SOURCES in tb.tb_frame.f_code.co_filename:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb))


def worker_loop(Region reg, uint32_t slot):
    """Runs tasks until shutdown (returns 0) or idle retirement (-1)."""
    return _loop(reg, slot, WORKER_SPIN_NS, IDLE_RETIRE_NS)


cdef int64_t _loop(Region reg, uint32_t slot, int64_t spin, int64_t idle) except? -3:
    """Runs the tasks (or a sync actor's calls) given to slot until
    nr_task_next says to stop, and returns what it said.  Each is finished
    in the same lock section that takes the next one."""
    global _finish_in_loop, _unfinished, _unsealed_id
    cdef int64_t t
    cdef uint32_t done
    cdef uint64_t oid
    _finish_in_loop = True
    try:
        while True:
            done, _unfinished = _unfinished, 0
            t = 0
            if _retire_after:           # max_calls reached: finish, and leave
                oid, _unsealed_id = _unsealed_id, 0
                t = nr_task_seal_finish_retire(&reg.r, slot, done, oid, _unsealed_off,
                                               _unsealed_size)
                if t < 0:
                    return t
            elif done:
                # One short section, holding the GIL: its simple return
                # sealed, and a task queued behind this one taken at once
                # (a pipelined burst) without releasing and taking the GIL
                # again around it.
                oid, _unsealed_id = _unsealed_id, 0
                t = nr_task_seal_finish_try_next(&reg.r, slot, done, oid, _unsealed_off,
                                                 _unsealed_size)
            if t == 0:
                with nogil:
                    t = nr_task_next(&reg.r, slot, spin, idle)
            if t <= 0:
                return t
            _run_task(reg, <uint32_t>t)
    finally:
        _finish_in_loop = False
        _seal_unsealed(reg)            # _run_task raised after its task completed
        if _unfinished:
            done, _unfinished = _unfinished, 0
            nr_task_finish(&reg.r, slot, done)


def task_returns(Region reg, uint32_t t):
    """Return ids of task t that are still pending (a streaming generator's
    pending cell among them)."""
    cdef nr_task_t *task = nr_task(&reg.r, t)
    cdef nr_spec_t *spec = <nr_spec_t *>(reg.r.base + task.spec)
    cdef uint64_t *ids = nr_spec_ids(spec)
    out = [ids[i] for i in range(spec.nret)
           if nr_object_info(&reg.r, ids[i], NULL, NULL) == NR_OBJ_PENDING]
    if spec.stream_cell and nr_object_info(&reg.r, spec.stream_cell, NULL, NULL) == NR_OBJ_PENDING:
        out.append(spec.stream_cell)
    return out


def task_returned(Region reg, uint32_t t):
    """True when task t has returns and sealed every one: its process died
    after it had returned (before finishing it), so nothing is to run again.
    A streaming generator has returned once its pending cell is sealed (a
    stream nobody reads any more is still re-run: its cell lives, pending,
    until the re-run seals it)."""
    cdef nr_task_t *task = nr_task(&reg.r, t)
    cdef nr_spec_t *spec = <nr_spec_t *>(reg.r.base + task.spec)
    cdef uint64_t *ids = nr_spec_ids(spec)
    cdef uint32_t i
    if spec.nret == 0:
        return False
    if spec.stream_cell and nr_object_info(&reg.r, spec.stream_cell, NULL, NULL) == NR_OBJ_PENDING:
        return False
    for i in range(spec.nret):
        if nr_object_info(&reg.r, ids[i], NULL, NULL) == NR_OBJ_PENDING:
            return False
    return True


def task_retry(Region reg, uint32_t t):
    return nr_task_retry(&reg.r, t)


def task_cancelled(Region reg, uint32_t t):
    """True when nanoray.cancel() asked for task t."""
    return bool(nr_task(&reg.r, t).cancelled)


def task_release(Region reg, uint32_t t):
    nr_task_release(&reg.r, t)


def proc_reap(Region reg, uint32_t slot):
    return nr_proc_reap(&reg.r, slot)


def sweep_uncounted(Region reg):
    """Frees sealed objects nothing counts (a process died between its
    decref and the free); after a reap.  Returns how many."""
    cdef uint32_t n
    with nogil:
        n = nr_sweep_uncounted(&reg.r)
    return n


def set_parent_death_signal(int sig):
    """The kernel sends sig to this process when its parent thread exits."""
    if prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_PDEATHSIG) failed")
