# Actors: the process side (hosting one instance, sequential, threaded or
# async) and the calls that create, call, find and kill them.  The C side,
# routing and death, is csrc/nr_actor.c.
# Included by _runtime.pyx: one extension module, one concern per file.
#
#   Cls.remote(*a) ─► put(descriptor) = handle object ─► nr_actor_create ─► zygote forks
#        │                                                      (slot, generation)
#        └─► creation task (kind ACTOR_CREATE, target slot) ──► runs first, in the actor
#   h.m.remote(*a) ─► call task (kind ACTOR_CALL, target slot, holds the handle object)
#                     ─► the actor's queue ─► sequential / thread pool / event loop

cdef object _actor = None          # the instance this process hosts
cdef bint _actor_process = False   # this process hosts an actor (from before __init__)
cdef str _actor_name = ""          # its class name (or repr) for messages
cdef uint32_t _actor_gen = 0       # generation of this process's actor slot
cdef dict _actor_opts = {}         # max_concurrency, is_async


cdef class _Constructor:
    """The creation task's callable: builds the instance this process hosts."""

    def __call__(self, *args, **kwargs):
        global _actor, _actor_name
        import inspect
        cls = self.cls
        if inspect.iscoroutinefunction(getattr(cls, "__init__", None)):
            # async def __init__, as Ray allows: awaited on the actor's event
            # loop, where its calls will run.
            import asyncio
            obj = (object.__new__(cls) if cls.__new__ is object.__new__
                   else cls.__new__(cls, *args, **kwargs))
            into = _default_call_loop()
            outcome = asyncio.run_coroutine_threadsafe(
                _caught(cls.__init__(obj, *args, **kwargs)), into.loop).result()
            if outcome is not None:          # raised here, exit_actor()'s SystemExit too
                raise outcome
            _actor = obj
        else:
            _actor = cls(*args, **kwargs)
        if type(_actor).__repr__ is not object.__repr__:
            try:
                _actor_name = repr(_actor)
            except Exception:
                pass


cdef tuple _actor_constructor(cls, dict opts):
    global _actor_name, _actor_opts
    _actor_name = getattr(cls, "__name__", "Actor")
    _actor_opts = opts
    env = opts.get("runtime_env")
    pg = opts.get("pg")
    if env or pg:                         # for the life of this process
        from nanoray import _runtime_env
        if env:
            _runtime_env.apply(env)
        _runtime_env.set_current_pg(pg)
    cdef _Constructor c = _Constructor.__new__(_Constructor)
    c.cls = cls
    return c, _actor_name + ".__init__"


cdef uint64_t _first_return(Region reg, uint32_t t):
    cdef nr_spec_t *spec = <nr_spec_t *>(reg.r.base + nr_task(&reg.r, t).spec)
    return nr_spec_ids(spec)[0] if spec.nret else 0


def _terminate():
    raise SystemExit(0)


def _ready():
    return True


cdef tuple _actor_method(str method):
    if method == "__ray_terminate__":
        return _terminate, _actor_name + ".__ray_terminate__"
    if method == "__ray_ready__":
        return _ready, _actor_name + ".__ray_ready__"
    return getattr(_actor, method), _actor_name + "." + method


cdef ObjectRef _put_death(err):
    """Stores an actor's death error: pinned, never spilled, since the C
    layer copies its payload into each call that fails."""
    return put_pickled(_running(), _pickle(err, False), True)


def put_death(err):
    """_put_death for the Python layer."""
    return _put_death(err)


cdef void _actor_exit(Region reg, uint32_t t) except *:
    """exit_actor(), __ray_terminate__ or sys.exit(0) in a method: the actor
    ends for good; this call and every queued one fail with ActorDiedError."""
    death = _put_death(_exc.ActorDiedError(
        "The actor %s exited on purpose (exit_actor(), __ray_terminate__ or sys.exit(0) "
        "in one of its methods): no more calls run on it." % _actor_name))
    cdef nr_task_t *task = nr_task(&reg.r, t)
    cdef nr_spec_t *spec = <nr_spec_t *>(reg.r.base + task.spec)
    cdef uint64_t *ids = nr_spec_ids(spec)
    cdef uint32_t i
    for i in range(spec.nret):
        _seal(reg, ids[i], _value_or_none(reg, (<ObjectRef>death)._id), True)
    nr_actor_die(&reg.r, _slot, _actor_gen, (<ObjectRef>death)._id)
    nr_task_finish(&reg.r, _slot, t)
    try:
        import atexit
        atexit._run_exitfuncs()
    finally:
        from nanoray import _output
        _output.flush_all()
        os._exit(0)


cdef object _value_or_none(Region reg, uint64_t oid):
    cdef bint is_error = False
    return _value(reg, oid, &is_error)


cdef void _actor_init_failed(Region reg, failure) except *:
    """__init__ raised: the actor is dead; every call raises ActorDiedError
    carrying that cause.  Its process exits when the creation task ends."""
    err = _exc.ActorDiedError(
        "The actor died because of an error raised in its creation task, %s.__init__()"
        % _actor_name, cause=failure)
    try:
        death = _put_death(err)
    except Exception:
        death = _put_death(_exc.ActorDiedError(
            "The actor died because of an error raised in its creation task, %s.__init__(): %s"
            % (_actor_name, _exc._safe_repr(failure))))
    nr_actor_die(&reg.r, _slot, _actor_gen, (<ObjectRef>death)._id)


def actor_loop(Region reg, uint32_t slot):
    """Hosts one actor until its last handle is gone (-2) or shutdown (0)."""
    global _actor_gen, _actor_process, _method_groups
    cdef nr_proc_t *p = nr_proc(&reg.r, slot)
    _actor_gen = p.gen
    _actor_process = True
    if p.aflags & NR_ACTOR_KILLED:
        return -1                         # killed before it started
    from nanoray._threads import limit
    limit(p.cpus_held // 1000)            # BLAS/OpenMP threads: the CPUs it holds for life
    if p.gpu_mask:                        # its GPUs, for life
        _set_visible_gpus(p.gpu_mask)
    cdef int64_t t
    cdef int64_t spin = WORKER_SPIN_NS
    while True:                           # the creation task comes first
        with nogil:
            t = nr_task_next(&reg.r, slot, spin, -1)
        if t <= 0:
            return t
        _run_task(reg, <uint32_t>t)
        if p.aflags & NR_ACTOR_CREATED:
            break
    if p.aflags & NR_ACTOR_DEAD:
        return -2
    cdef int concurrency = _actor_opts.get("max_concurrency", 1)
    groups = _actor_opts.get("groups")
    _method_groups = _actor_opts.get("method_groups") or {}
    if _actor_opts.get("is_async"):
        return _async_loop(reg, slot, concurrency, groups)
    if groups:
        return _grouped_loop(reg, slot, concurrency, groups)
    if concurrency > 1:
        return _threaded_loop(reg, slot, concurrency)
    # A call is finished (its simple return sealed) and the next one already
    # queued taken in one short section holding the GIL (pipelined calls);
    # the blocking wait releases it.
    return _loop(reg, slot, spin, -1)


cdef int64_t _threaded_loop(Region reg, uint32_t slot, int concurrency) except? -3:
    """max_concurrency > 1: calls run on a pool of that many threads."""
    from concurrent.futures import ThreadPoolExecutor
    free = threading.Semaphore(concurrency)
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="nanoray-actor")

    def run(uint32_t t):
        try:
            _run_task(reg, t)
        finally:
            free.release()
    cdef int64_t t
    cdef int64_t spin = WORKER_SPIN_NS
    try:
        while True:
            free.acquire()
            with nogil:
                t = nr_task_next(&reg.r, slot, spin, -1)
            if t <= 0:
                return t
            pool.submit(run, <uint32_t>t)
    finally:
        pool.shutdown(wait=t != 0)


cdef dict _method_groups = {}     # method name -> its concurrency group (ray.method's),
                                  # found by the ActorClass

cdef dict _label_groups = {}      # a call label's object id -> its group (or "")


cdef object _call_group(Region reg, uint32_t t):
    """The concurrency group actor call t runs in (None: the default one):
    its .options(concurrency_group=) or its method's, read from the call's
    label ("Class.method", then the group after \x1f when the call names
    one), which its spec names where a task names its function: the
    arguments are not loaded here."""
    cdef nr_task_t *task = nr_task(&reg.r, t)
    cdef nr_spec_t *spec = <nr_spec_t *>(reg.r.base + task.spec)
    cdef bint is_error = False
    if spec.kind != NR_SPEC_ACTOR_CALL or not spec.func_id:
        return None
    group = _label_groups.get(spec.func_id)
    if group is None:
        try:
            label = _value(reg, spec.func_id, &is_error)
        except Exception:
            return None
        if is_error or type(label) is not str:
            return None
        name, _, group = (<str>label).partition("\x1e")[0].partition("\x1f")
        if not group:
            group = _method_groups.get(name.rpartition(".")[2], "")
        if len(_label_groups) >= 4096:
            _label_groups.clear()
        _label_groups[spec.func_id] = group
    return group or None


cdef int64_t _grouped_loop(Region reg, uint32_t slot, int concurrency, dict groups) except? -3:
    """concurrency_groups on a sync actor: each group's calls run on a pool
    of threads of its own, as many as the group allows; the other calls on
    max_concurrency threads.  Calls are taken as they come (a group that is
    busy holds up no other)."""
    from concurrent.futures import ThreadPoolExecutor
    pools = {None: ThreadPoolExecutor(concurrency, thread_name_prefix="nanoray-actor")}
    for g, n in groups.items():
        pools[g] = ThreadPoolExecutor(n, thread_name_prefix="nanoray-actor-%s" % g)

    def run(uint32_t t):
        _run_task(reg, t)
    cdef int64_t t = 0
    cdef int64_t spin = WORKER_SPIN_NS
    try:
        while True:
            with nogil:
                t = nr_task_next(&reg.r, slot, spin, -1)
            if t <= 0:
                return t
            pools.get(_call_group(reg, <uint32_t>t), pools[None]).submit(run, <uint32_t>t)
    finally:
        for pool in pools.values():
            pool.shutdown(wait=t != 0)


# How often an async actor looks for cancelled calls while calls run.
CANCEL_POLL_S = 0.05


cdef int64_t _async_loop(Region reg, uint32_t slot, int concurrency, dict groups) except? -3:
    """Async actors: calls run as tasks of an event loop (a thread of this
    process), up to max_concurrency at once; this thread feeds it.  With
    concurrency_groups, each group has a loop (and thread) of its own, as in
    Ray, limited to the group's size: a call that blocks its loop holds up
    no other group."""
    import asyncio
    free = threading.Semaphore(concurrency) if not groups else None
    loops = {None: _default_call_loop()}
    (<_CallLoop>loops[None]).free = free
    (<_CallLoop>loops[None]).size = concurrency
    for g, n in groups.items():
        loops[g] = _CallLoop(reg, g, None, n)
    cdef int64_t t
    cdef int64_t spin = WORKER_SPIN_NS
    cdef _CallLoop into
    while True:
        if free is not None:
            free.acquire()
        with nogil:
            t = nr_task_next(&reg.r, slot, spin, -1)
        if t <= 0:
            for into in loops.values():
                into.loop.call_soon_threadsafe(into.loop.stop)
            return t
        # Each call runs in a copy of this thread's context, numpy's
        # allocator hook included once this thread has it.
        _born_check()
        into = loops[None] if free is not None else loops.get(
            _call_group(reg, <uint32_t>t), loops[None])
        into.loop.call_soon_threadsafe(into.start, <uint32_t>t)


async def _caught(coro):
    """coro's exception (any: a SystemExit would stop the loop's thread), or None."""
    try:
        await coro
    except BaseException as e:
        return e
    return None


cdef _CallLoop _default_loop = None


cdef _CallLoop _default_call_loop():
    """The async actor's loop for calls of no group (made by an async
    __init__, which runs on it, or when calls start)."""
    global _default_loop
    if _default_loop is None:
        _default_loop = _CallLoop(_region, "default", None, 1)
    return _default_loop


cdef class _CallLoop:
    """One event loop of an async actor, on a thread of its own, and the
    calls running on it: every call (free: max_concurrency), or one
    concurrency group's (sem: the group's size, made on the loop)."""
    cdef Region reg
    cdef object loop, free, sem
    cdef object asyncio, isasyncgen, isawaitable   # looked up once, not per call
    cdef int size
    cdef dict running          # call -> its asyncio.Task (registered at its first step,
                               # so a call is never cancelled before it, which would
                               # skip its finally)
    cdef set cancelled
    cdef bint watching         # the watch below is scheduled
    # Both live on the loop's thread.

    def __cinit__(self, Region reg, str name, free, int size):
        import asyncio
        import inspect
        self.asyncio = asyncio
        self.isasyncgen = inspect.isasyncgen
        self.isawaitable = inspect.isawaitable
        self.reg = reg
        self.loop = asyncio.new_event_loop()
        self.free = free
        self.size = size
        self.running = {}
        self.cancelled = set()
        threading.Thread(target=self.loop.run_forever, daemon=True,
                         name="nanoray-actor-loop" if name == "default"
                         else "nanoray-actor-loop-%s" % name).start()

    def watch(self):
        """While calls run: every 50 ms, cancel the asyncio.Task of a call
        nanoray.cancel() marked (as Ray does for async actors)."""
        for t, job in list(self.running.items()):
            if t not in self.cancelled and nr_task(&self.reg.r, <uint32_t>t).cancelled:
                self.cancelled.add(t)
                job.cancel()
        self.watching = bool(self.running)
        if self.watching:
            self.loop.call_later(CANCEL_POLL_S, self.watch)

    def start(self, uint32_t t):
        self.loop.create_task(self.run(t))

    async def run(self, uint32_t t):
        cdef Region reg = self.reg
        cdef _Call c
        self.running[t] = self.asyncio.current_task()
        if not self.watching:
            self.watching = True
            self.loop.call_later(CANCEL_POLL_S, self.watch)
        held = False
        try:
            c = _prepare(reg, t)
            if self.free is None:
                if self.sem is None:
                    self.sem = self.asyncio.Semaphore(self.size)
                try:
                    await self.sem.acquire()
                    held = True
                except BaseException as e:     # cancelled while its group was full
                    c.failure = _failure_of(e, c.name)
                    _complete(reg, c, None)
                    return
            while True:
                result = _invoke(c)
                if self.isasyncgen(result) and c.extras is not None and \
                        c.extras.get("gen") == "streaming":
                    await stream_async(reg, c, result, _first_return(reg, t))
                    c.streamed = True
                elif self.isawaitable(result):
                    try:
                        result = await result
                        if t in self.cancelled:
                            # Its coroutine swallowed the cancel: the call
                            # still raises TaskCancelledError, as in Ray.
                            result = None
                            c.failure = _exc.TaskCancelledError(error_message=(
                                "nanoray: actor call %s() was cancelled while it ran" % c.name))
                    except SystemExit as e:
                        _exiting(c, e)
                    except BaseException as e:
                        c.raised = e
                        c.failure = _failure_of(e, c.name)
                if c.raised is None or not _retry_exception(reg, c):
                    break
                c = _reload(reg, c)
            _complete(reg, c, result)
        finally:
            self.running.pop(t, None)
            self.cancelled.discard(t)
            if self.free is not None:
                self.free.release()
            elif held:
                self.sem.release()


# -- the caller's side ------------------------------------------------------


def actor_create(ObjectRef handle, int32_t max_restarts, int32_t cpus_milli, key,
                 bint detached=False, bint unordered=False, tuple res=None, uint64_t pool=0,
                 bint infeasible=False):
    """A slot for a new actor: (slot, generation); (-2, existing handle id)
    when the name is taken.  An infeasible actor holds nothing and never
    starts: its calls stay pending until it is killed or its handles go."""
    cdef Region reg = _check_ref(handle)
    cdef uint32_t gen = 0
    cdef uint64_t existing = 0
    cdef bytes k = None
    cdef const char *kp = NULL
    cdef uint32_t flags = (NR_ACTOR_DETACHED if detached else 0) | (
        NR_ACTOR_UNORDERED if unordered else 0) | (NR_ACTOR_INFEASIBLE if infeasible else 0)
    if key is not None:
        if "\x00" in key:
            raise ValueError("actor names and namespaces cannot contain NUL characters")
        k = key.encode("utf-8")
        if len(k) >= NR_NAME_MAX:
            raise ValueError("actor name and namespace are too long (at most %d bytes together)"
                             % (NR_NAME_MAX - 2))
        kp = k
    cdef int32_t resv[NR_RES]
    if res is not None:
        _fill_res(res, resv)
    cdef int slot = nr_actor_create(&reg.r, handle._id, max_restarts, cpus_milli,
                                    resv if res is not None else NULL, pool, flags, kp,
                                    &gen, &existing)
    if slot == -1:
        raise _exc.RaySystemError("nanoray: no process slot is free for another actor "
                                  "(at most %d processes)" % reg.r.hdr.max_procs)
    if slot == -3:
        raise _exc.RaySystemError("nanoray: too many named actors alive at once")
    if slot == -4:
        raise ValueError("this actor needs %g CPUs but nanoray was started with num_cpus=%g"
                         % (cpus_milli / 1000.0, reg.r.hdr.cpus_total / 1000.0))
    if slot == -5:
        raise ValueError("this actor asks for more GPUs, memory or custom resources than "
                         "nanoray was started with (%s)"
                         % {n: t for n, (t, a) in resource_table(reg).items()})
    if slot == -2:
        return -2, existing
    return slot, gen


def actor_names(bint with_slots=False):
    """(namespace, name) of every named actor alive; with_slots, (namespace,
    name, slot)."""
    cdef Region reg = _running()
    cdef nr_name_t *n = <nr_name_t *>(reg.r.base + reg.r.hdr.names_off)
    cdef uint32_t i, m = 0, cap = reg.r.hdr.max_names
    # Copied under the lock into C memory, made into Python objects after:
    # a garbage collection run under the lock could free a ref, whose
    # decref takes the lock again.
    cdef nr_name_t *copy = <nr_name_t *>malloc(sizeof(nr_name_t) * max(cap, 1))
    if copy == NULL:
        raise MemoryError()
    keys = []
    try:
        nr_lock(&reg.r)
        for i in range(cap):
            if n[i].handle_obj:
                copy[m] = n[i]
                m += 1
        nr_unlock(&reg.r)
        for i in range(m):
            copy[i].key[NR_NAME_MAX - 1] = 0
            keys.append((<bytes>copy[i].key, copy[i].slot1 - 1))
    finally:
        free(copy)
    out = [tuple(k.decode("utf-8", "replace").split("\x1f", 1)) for k, _ in keys]
    if with_slots:
        return [pair + (slot,) for pair, (_, slot) in zip(out, keys)]
    return out


def actor_lookup(str key):
    """(handle object id, slot, generation) of a named live actor, or None."""
    cdef Region reg = _region
    cdef uint64_t h = 0
    cdef uint32_t slot = 0, gen = 0
    k = key.encode("utf-8")
    if reg is None or len(k) >= NR_NAME_MAX or nr_actor_lookup(&reg.r, k, &h, &slot, &gen) != 0:
        return None
    return h, slot, gen


def submit_actor_create(ObjectRef cls_ref, uint32_t slot, tuple args, dict kwargs, dict opts):
    cdef Region reg = _running()
    if cls_ref._reg is not reg:
        raise _exc.RaySystemError("nanoray: this class was exported to a runtime that was shut down")
    _submit(reg, cls_ref._id, args, kwargs, 0, 0, 0, slot + 1, NR_SPEC_ACTOR_CREATE, None, opts)


def submit_actor_call(ObjectRef handle, uint32_t slot, str method, tuple args, dict kwargs,
                      uint32_t nret, int32_t retries, dict extras=None, ObjectRef label=None):
    """Queues handle's actor method call; returns its ref(s).  label: an
    object holding "Class.method", named in the spec where a task names its
    function (counted the same way), for nanoray.util.state."""
    cdef Region reg = _check_ref(handle)
    cdef uint64_t label_id = label._id if label is not None and label._reg is reg else 0
    return _submit(reg, label_id, args, kwargs, nret, 0, retries, slot + 1,
                   NR_SPEC_ACTOR_CALL, handle, method, extras)


def actor_method_remote(self, /, *args, **kwargs):
    """Queues a call of this actor method; returns its ObjectRef (a list of
    them if num_returns > 1)."""
    # In C when the handle has no max_pending_calls and the method does not
    # stream, once its "Class.method" label is stored in this runtime (the
    # first call stores it); any other call takes ActorMethod._remote.
    cdef Region reg = _region
    cdef ObjectRef label
    if reg is not None and self._pending is None and not self._streaming:
        held = self._label
        if (<tuple>held)[0] is reg:
            ref = self._ref
            if type(ref) is not ObjectRef:
                ref = ref.strong()           # the call holds the actor while pending
            if (<ObjectRef>ref)._reg is reg:
                label = (<tuple>held)[1]
                return _submit(reg, label._id, args, kwargs or None, self._nret, 0,
                               self._retries, <uint32_t>self._slot + 1, NR_SPEC_ACTOR_CALL,
                               ref, self._name, self._extras)
    return self._remote(args, kwargs)


# Named as the method it is (copy, pickle, repr): pickled by reference, it
# is found again as nanoray.actor.ActorMethod.remote.
actor_method_remote.__name__ = "remote"
actor_method_remote.__qualname__ = "ActorMethod.remote"
actor_method_remote.__module__ = "nanoray.actor"


def pending_count(list refs):
    """Drops the sealed refs from refs; returns how many are still pending."""
    cdef Region reg = _running()
    refs[:] = [r for r in refs
               if nr_object_info(&reg.r, (<ObjectRef>r)._id, NULL, NULL) == NR_OBJ_PENDING]
    return len(refs)


def actor_die(uint32_t slot, uint32_t gen, ObjectRef death=None):
    """Ends the actor for good (its creation could not be submitted)."""
    cdef Region reg = _running()
    return nr_actor_die(&reg.r, slot, gen, death._id if death is not None else 0)


def actor_kill(uint32_t slot, uint32_t gen, bint no_restart):
    """Kills the actor's process (SIGKILL, sent under the region lock);
    returns its pid (0: not started yet, -1: gone)."""
    cdef Region reg = _running()
    return nr_actor_kill(&reg.r, slot, gen, no_restart)


def actor_reap(Region reg, uint32_t slot):
    """The zygote saw actor `slot`'s process end: True to restart it."""
    cdef nr_proc_t *p = nr_proc(&reg.r, slot)
    if p.aflags & NR_ACTOR_OWNER_DIED:
        msg = ("The actor is dead because its owner has died: the actor or task's worker that "
               "created it ended. Create it with lifetime=\"detached\" to outlive its creator.")
    elif p.aflags & NR_ACTOR_KILLED:
        msg = "The actor was killed by nanoray.kill()."
    else:
        msg = ("The actor died unexpectedly before finishing this call: its process ended "
               "(killed, crashed, out of memory, or it called sys.exit() with a code other "
               "than 0, or os._exit()).")
    cdef uint64_t death_id = 0, unavail_id = 0
    try:
        death = _put_death(_exc.ActorDiedError(msg))
        death_id = (<ObjectRef>death)._id
        if p.restarts_left != 0 and not p.aflags & (NR_ACTOR_DEAD | NR_ACTOR_NO_RESTART):
            # It may restart (nr_actor_reap decides): a call it was running
            # that is not retried fails with this, as in Ray.
            unavail = _put_death(_exc.ActorUnavailableError(
                "The actor died while running this call and is restarting (max_restarts); "
                "the call is not retried (max_task_retries), and it may or may not have "
                "run: " + msg))
            unavail_id = (<ObjectRef>unavail)._id
    except Exception:                          # the store is full: calls fail without it
        pass
    return nr_actor_reap(&reg.r, slot, death_id, unavail_id) == 1


def actor_info(uint32_t slot, uint32_t gen):
    """(state, flags, restarts, pid), or None when (slot, gen) is stale."""
    cdef Region reg = _running()
    cdef uint32_t flags = 0, restarts = 0
    cdef int32_t pid = 0
    cdef int st = nr_actor_info(&reg.r, slot, gen, &flags, &restarts, &pid)
    if st < 0:
        return None
    return st, flags, restarts, pid


def current_actor_slot():
    """(slot, generation, handle object id) when this process hosts an actor, else None."""
    cdef Region reg = _region
    if reg is None or not _actor_process:
        return None
    return _slot, _actor_gen, nr_proc(&reg.r, _slot).handle_obj


def actor_teardown():
    """Before the actor's process exits: drop the instance, and with it the
    refs and handles it holds, so their counts are given back."""
    global _actor
    _actor = None
    drop_function_cache()
    import gc
    gc.collect()
