# The worker side: loading functions, running a task, sealing its returns,
# and the calls the zygote makes when a process dies.
# Included by _runtime.pyx: one extension module, one concern per file.


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
