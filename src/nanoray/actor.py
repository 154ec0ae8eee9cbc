"""Actors: @remote on a class, with Ray's names and semantics.

An actor is a process of its own, forked by the zygote, that hosts one
instance of the class.  A method call is a task routed to that process's
queue in the shared region (csrc/nr_actor.c), on the same submit path and
lock as any task, so a call costs what a task costs.

    ActorClass.remote(*args)  ->  ActorHandle   (returns at once)
    handle.method.remote(*a)  ->  ObjectRef(s)  (each caller's in its order)

Handles hold a count on the actor's *handle object*; pickled into a value
or a task's arguments they are counted there too, and every pending call
holds one.  A name holds one until the actor dies, and so does a detached
actor.  When nothing holds it, the actor's process exits once its queue is
empty and its slot is reused.  An actor's handle to itself
(get_runtime_context().current_actor) holds nothing (_WeakRef).
"""

import inspect
import numbers

from nanoray import _api, _runtime_env
from nanoray import exceptions
from nanoray._core import _runtime as _rt
from nanoray._core._runtime import ObjectRef
from nanoray.remote_function import (GENERATOR_MODES, RemoteFunction, _Bound, _signature_check,
                                     call_extras, check_num_returns, check_resources,
                                     check_scheduling, explicit_strategy, placement_of,
                                     check_retry_exceptions, check_task_name, resource_demand,
                                     warn_infeasible)

__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "exit_actor", "method"]

# Ray's actor options.  Those without an effect on one machine are accepted
# so that Ray code runs unchanged.
_ACTOR_DEFAULTS = {"num_cpus": 0, "max_concurrency": None, "max_restarts": 0,
                   "max_task_retries": 0, "name": None, "namespace": None,
                   "get_if_exists": False, "lifetime": None, "max_pending_calls": -1,
                   "runtime_env": None, "num_gpus": 0, "resources": None, "memory": None,
                   "scheduling_strategy": None, "placement_group": None,
                   "placement_group_bundle_index": None,
                   "placement_group_capture_child_tasks": None,
                   # {group: max concurrency}: methods of a group (ray.method's
                   # concurrency_group) run on threads (or slots) of their own
                   "concurrency_groups": None}
_ACTOR_NO_EFFECT = {"accelerator_type", "_metadata",
                    "label_selector", "enable_task_events",
                    "object_store_memory", "allow_out_of_order_execution"}
# Ray's default concurrency for async actors.
ASYNC_MAX_CONCURRENCY = 1000
_NAME_SEP = "\x1f"


def _check_int(opts, key, least):
    v = opts.get(key)
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < least):
        raise ValueError("%s must be an int >= %d, got %r" % (key, least, v))


def validate_actor_options(opts):
    for key in opts:
        if key not in _ACTOR_DEFAULTS and key not in _ACTOR_NO_EFFECT:
            raise ValueError("Invalid option keyword %s for actors." % (key,))
    c = opts.get("num_cpus")
    if c is not None and (not isinstance(c, numbers.Real) or isinstance(c, bool) or c < 0
                          or c != c):
        raise ValueError("num_cpus must be a number >= 0, got %r" % (c,))
    _check_int(opts, "max_concurrency", 1)
    groups = opts.get("concurrency_groups")
    if groups is not None:
        if not isinstance(groups, dict):
            raise TypeError("concurrency_groups must be a dict of group name to max "
                            "concurrency, got %r" % (type(groups).__name__,))
        for g, n in groups.items():
            if not isinstance(g, str) or not g:
                raise ValueError("concurrency group names must be non-empty str, got %r" % (g,))
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ValueError("the max concurrency of group %r must be an int >= 1, got %r"
                                 % (g, n))
    _check_int(opts, "max_restarts", -1)
    _check_int(opts, "max_task_retries", -1)
    mp = opts.get("max_pending_calls")
    if mp is not None and (not isinstance(mp, int) or isinstance(mp, bool) or mp == 0 or mp < -1):
        raise ValueError("max_pending_calls must be -1 (no limit) or a positive int, got %r"
                         % (mp,))
    for key in ("name", "namespace"):
        v = opts.get(key)
        if v is not None and (not isinstance(v, str) or not v):
            raise ValueError("%s must be a non-empty str, got %r" % (key, v))
        if v is not None and ("\x00" in v or _NAME_SEP in v):
            raise ValueError("%s cannot contain the characters \\x00 or \\x1f, got %r"
                             % (key, v))
    lifetime = opts.get("lifetime")
    if lifetime not in (None, "detached", "non_detached"):
        raise ValueError("actor lifetime must be 'detached' or 'non_detached', got %r"
                         % (lifetime,))
    if opts.get("get_if_exists") and not opts.get("name"):
        raise ValueError("The actor name must be specified to use get_if_exists.")
    check_resources(opts)
    check_scheduling(opts)
    _runtime_env.validate(opts.get("runtime_env"))
    return opts


def method(*args, **kwargs):
    """Options for one actor method: ``@nanoray.method(num_returns=2)``."""
    valid = {"num_returns", "concurrency_group", "max_task_retries", "retry_exceptions",
             "_generator_backpressure_num_objects", "enable_task_events", "tensor_transport"}
    if args:
        raise ValueError("The @nanoray.method decorator takes keyword arguments only, "
                         "e.g. @nanoray.method(num_returns=2)")
    for k in kwargs:
        if k not in valid:
            raise ValueError("Invalid option keyword %s for actor methods." % (k,))
    check_num_returns(kwargs.get("num_returns"))
    check_retry_exceptions(kwargs.get("retry_exceptions"))

    def decorate(f):
        f.__nanoray_method_options__ = dict(kwargs)
        return f
    return decorate


def _describe(cls):
    """What a handle needs to know of its class: method names, returns,
    whether it is async.  Pickled with every handle, so kept small."""
    methods = {}
    is_async = inspect.iscoroutinefunction(getattr(cls, "__init__", None))
    for name, member in inspect.getmembers(cls):
        if name.startswith("__") and name.endswith("__") and name != "__call__":
            continue
        if not callable(member) or isinstance(member, type):
            continue
        func = getattr(member, "__func__", member)
        opts = getattr(func, "__nanoray_method_options__", None) or {}
        if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
            is_async = True
        default = ("streaming" if inspect.isgeneratorfunction(func)
                   or inspect.isasyncgenfunction(func) else 1)
        methods[name] = (opts.get("num_returns", default), opts.get("max_task_retries"),
                         opts.get("retry_exceptions", False))
    return {"class_name": cls.__name__, "module": getattr(cls, "__module__", None),
            "methods": methods, "is_async": is_async}


class ActorClass:
    """What @remote makes of a class; ``.remote()`` starts an actor."""

    def __init__(self, cls, options):
        validate_actor_options(options)
        self._cls = cls
        self._options = dict(options)
        self._desc = _describe(cls)
        self._method_groups = {                 # method -> the concurrency group it names
            name: opts["concurrency_group"]
            for name, opts in ((n, getattr(getattr(m, "__func__", m),
                                           "__nanoray_method_options__", None) or {})
                               for n, m in inspect.getmembers(cls) if callable(m))
            if opts.get("concurrency_group") is not None}
        self._exporter = RemoteFunction(cls, {})   # exports the class once per runtime
        self._check = _signature_check(cls)
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            try:
                setattr(self, attr, getattr(cls, attr))
            except AttributeError:
                pass

    def __call__(self, *args, **kwargs):
        name = self._cls.__name__
        raise TypeError("Actors cannot be instantiated directly. Instead of '%s()', use "
                        "'%s.remote()'." % (name, name))

    def __repr__(self):
        return "ActorClass(%s)" % self._cls.__name__

    def remote(self, /, *args, **kwargs):
        """Starts an actor; returns its ActorHandle at once."""
        return self._submit(args, kwargs, self._options)

    def options(self, **options):
        if "concurrency_groups" in options:   # as in Ray: they belong to the class
            raise ValueError("Setting 'concurrency_groups' is not supported in '.options()'.")
        validate_actor_options(options)
        merged = dict(self._options)
        merged.update(options)
        return _Bound(self, merged)

    def bind(self, *args, **kwargs):
        """A DAG node that creates this actor at execute() (nanoray.dag)."""
        from nanoray.dag import ClassNode
        return ClassNode(self, args, kwargs)

    def _bind_with(self, opts, args, kwargs):
        from nanoray.dag import ClassNode
        return ClassNode(self, args, kwargs, opts)

    def _submit(self, args, kwargs, opts):
        o = dict(_ACTOR_DEFAULTS)
        o.update({k: v for k, v in opts.items() if k in _ACTOR_DEFAULTS and v is not None})
        if self._check is not None:
            self._check(args, kwargs)
        backend = _api._get_backend()
        if backend.remote:
            return backend.create_actor(self, args, kwargs, opts)
        name = o["name"]
        key = None
        if name is not None:
            namespace = o["namespace"] or backend.namespace
            key = namespace + _NAME_SEP + name
        is_async = self._desc["is_async"]
        concurrency = o["max_concurrency"] or (ASYNC_MAX_CONCURRENCY if is_async else 1)
        groups = dict(o["concurrency_groups"] or {})
        for m, g in self._method_groups.items():
            if g not in groups:
                raise ValueError("%s.%s runs in concurrency group %r, which the actor does not "
                                 "define (its concurrency_groups: %s)"
                                 % (self._cls.__name__, m, g, sorted(groups)))
        cpus_milli = int(round(o["num_cpus"] * 1000))     # actor_create refuses too many
        cls_ref = self._exporter._current_export()
        # The handle object: what every handle (get_actor's too) knows of it.
        desc = dict(self._desc, max_task_retries=o["max_task_retries"],
                    max_pending_calls=max(0, o["max_pending_calls"]), groups=tuple(groups))
        from nanoray.util.scheduling_strategies import check, normalize
        strategy = normalize(o)
        pool, pg = placement_of(strategy)
        if pool == 0 and not explicit_strategy(opts):
            cur = _runtime_env.current_pg          # a captured parent's group
            if cur is not None and cur[1]:
                from nanoray.util.placement_group import _pool_of
                pool, pg = (_pool_of(cur[0], -1) or 0), cur
        if strategy is not None and pg is None:
            if not check(strategy):
                raise exceptions.ActorUnschedulableError(
                    "The actor %s is unschedulable: its NodeAffinitySchedulingStrategy names "
                    "node %s, which is not this machine, and soft=False was specified."
                    % (self._cls.__name__, getattr(strategy, "node_id", strategy)))
        res = None
        demand = resource_demand(o)
        if demand:
            res = _rt.demand(demand)[0]
        # More than the machine has: Ray's warning, and the actor stays
        # pending (its calls too) until it is killed or its handles go.
        infeasible = pg is None and warn_infeasible(
            "actor %s" % self._cls.__name__, cpus_milli, demand, _rt.resource_table())
        if pg is not None:
            from nanoray.util.placement_group import check_fits
            check_fits(pg[0], getattr(strategy, "placement_group_bundle_index", -1)
                       if strategy is not None else -1, cpus_milli, demand,
                       self._cls.__qualname__)
            _wait_for_group(pg[0], pool, cpus_milli, res, self._cls.__name__)
        handle_ref = _rt.put(desc)
        slot, gen = _rt.actor_create(handle_ref, o["max_restarts"], cpus_milli, key,
                                     detached=o["lifetime"] == "detached",
                                     unordered=is_async or concurrency > 1, res=res,
                                     pool=pool, infeasible=infeasible)
        if pg is not None and slot >= 0:
            pg[0]._actors.append((slot, gen))     # killed if the group is removed
        if slot == -2:
            if o["get_if_exists"]:
                return get_actor(name, o["namespace"])
            raise exceptions.ActorAlreadyExistsError(
                "The name %s (namespace=%s) is already taken by another actor."
                % (name, o["namespace"] or backend.namespace))
        try:
            env = _runtime_env.merge(_runtime_env.current,
                                     _runtime_env.validate(o["runtime_env"]))
            _rt.submit_actor_create(cls_ref, slot, tuple(args), dict(kwargs),
                                    {"max_concurrency": concurrency, "is_async": is_async,
                                     "runtime_env": env, "pg": pg, "groups": groups,
                                     "method_groups": self._method_groups if groups else {}})
        except BaseException as e:
            # Never a half-made actor: its name, CPUs and slot go back.
            try:
                death = _rt.put_death(exceptions.ActorDiedError(
                    "The actor %s was never created: %s" % (desc["class_name"],
                                                           exceptions._safe_repr(e))))
            except BaseException:
                death = None                 # calls then fail with a system error
            _rt.actor_die(slot, gen, death)
            raise
        return ActorHandle(handle_ref, slot, gen, desc)


def _wait_for_group(pg, pool, cpus_milli, res, name):
    """An actor in a placement group is made once the group is placed (so
    it is charged to the group, never to the machine), and only if the
    group reserved enough for it."""
    if getattr(pg, "_never", False):
        raise exceptions.ActorUnschedulableError(
            "The actor %s is unschedulable: its placement group %s can never be placed on "
            "this machine." % (name, pg.id.hex()))
    if _rt.pg_state(pool) == 1:                      # pending: wait for its reservation
        from nanoray import _api
        _api.get(pg.ready())
    if not _rt.pg_fits(pool, cpus_milli, res):
        raise exceptions.ActorUnschedulableError(
            "The actor %s is unschedulable: it asks for more than its placement group %s "
            "reserved (%s), or the group was removed." % (name, pg.id.hex(), pg.bundle_specs))


class _WeakRef:
    """The handle object's id without a count: what a weak handle holds (an
    actor's handle to itself, so that it does not keep itself alive)."""
    __slots__ = ("_id",)

    def __init__(self, oid):
        self._id = oid

    def strong(self):
        ref = _rt.ref_if_alive(self._id)
        if ref is None:
            raise exceptions.ActorDiedError("The actor is gone: no handle to it is left.")
        return ref

    def __eq__(self, other):
        return isinstance(other, (_WeakRef, ObjectRef)) and other._id == self._id

    def __hash__(self):
        return hash(self._id)


class ActorHandle:
    """A handle to an actor: attribute access gives its methods."""

    def __init__(self, ref, slot, gen, desc):
        self._ref = ref
        self._slot = slot
        self._gen = gen
        self._desc = desc
        self._retries = desc.get("max_task_retries", 0)
        self._max_pending = desc.get("max_pending_calls", 0)
        self._pending = [] if self._max_pending else None   # this handle's unfinished calls

    def __dir__(self):
        return sorted(set(super().__dir__()) |
                      set(self.__dict__.get("_desc", {}).get("methods", {})))

    def __getattr__(self, name):
        methods = self.__dict__.get("_desc", {}).get("methods", {})
        spec = methods.get(name)
        if spec is None:
            if name in ("__ray_terminate__", "__ray_ready__"):
                spec = (1, 0, False)
            else:
                raise AttributeError("'%s' actor has no method '%s'"
                                     % (self.__dict__.get("_desc", {}).get("class_name"), name))
        retries = spec[1] if spec[1] is not None else self._retries
        m = ActorMethod(self._ref, self._slot, self._pending, self._max_pending,
                        self._desc["class_name"], name, spec[0], retries, spec[2])
        m._groups = self._desc.get("groups")
        self.__dict__[name] = m               # cached: the next access is a dict lookup
        return m

    def __reduce__(self):
        ref = self._ref
        if type(ref) is _WeakRef:
            ref = ref.strong()               # a copy sent elsewhere is a real handle
        return (_rebuild_handle, (ref, self._slot, self._gen, self._desc))

    def __repr__(self):
        return "Actor(%s, %s)" % (self._desc["class_name"], self._actor_id_hex())

    def __eq__(self, other):
        return (isinstance(other, ActorHandle) and other._slot == self._slot
                and other._gen == self._gen and other._ref._id == self._ref._id)

    def __hash__(self):
        return hash((self._slot, self._gen))

    def _actor_id_hex(self):
        return actor_id_hex(self._slot, self._gen, self._ref._id)

    @property
    def _actor_id(self):
        return _ActorID(self._actor_id_hex())


class HexID:
    """An id shown as hex (ActorID, PlacementGroupID), as Ray's are."""
    __slots__ = ("_hex",)

    def __init__(self, h):
        self._hex = h

    def hex(self):
        return self._hex

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__.lstrip("_"), self._hex)

    def __eq__(self, other):
        return type(other) is type(self) and other._hex == self._hex

    def __hash__(self):
        return hash(self._hex)


class _ActorID(HexID):
    __slots__ = ()


def actor_id_hex(slot, gen, handle_obj):
    """An actor's id: its slot, the slot's generation, its handle object."""
    return "%08x%08x%016x" % (slot, gen, handle_obj)


def _rebuild_handle(ref, slot, gen, desc):
    return ActorHandle(ref, slot, gen, desc)


class ActorMethod:
    """handle.method: ``.remote(*args)`` queues a call; ``.options(num_returns=)``."""

    # The handle's fields, not the handle: a handle caches its methods, and
    # a cycle would keep the actor alive until the garbage collector ran.
    __slots__ = ("_ref", "_slot", "_pending", "_max_pending", "_cls", "_name", "_nret",
                 "_retries", "_mode", "_retry_exc", "_extras", "_streaming", "_label", "_group",
                 "_groups", "_task_name")

    def __init__(self, ref, slot, pending, max_pending, cls_name, name, num_returns, retries,
                 retry_exceptions=False, group=None, task_name=None):
        self._ref = ref
        self._slot = slot
        self._pending = pending
        self._max_pending = max_pending
        self._cls = cls_name
        self._name = name
        self._mode = num_returns                 # an int, "streaming" or "dynamic"
        # A streaming method's returns: its first cell, and completed()'s.
        self._nret = ((2 if num_returns == "streaming" else 1) if num_returns in GENERATOR_MODES
                      else num_returns)
        self._streaming = num_returns == "streaming"
        self._retries = retries
        self._retry_exc = retry_exceptions
        self._group = group                      # .options(concurrency_group=...)
        self._task_name = task_name              # .options(name=...)
        self._groups = None                      # the actor's groups, when its handle said
        self._extras = call_extras(num_returns, retry_exceptions)
        if task_name:                            # for the worker: a failure's header
            self._extras = dict(self._extras or (), name=task_name)
        self._label = (None, None)               # (runtime, ref to "Class.method")

    def _label_ref(self):
        """A stored "Class.method" for the calls' specs (list_tasks names
        them by it), one per method and runtime."""
        region, ref = self._label
        if region is not _rt.current_region():
            region = _rt.current_region()
            # With .options(concurrency_group=), the group rides in it too
            # (after \x1f): the actor finds a call's group without loading
            # the call's arguments; with .options(name=), the name after \x1e.
            label = "%s.%s" % (self._cls, self._name)
            if self._group is not None:
                label += "\x1f" + self._group
            if self._task_name:
                label += "\x1e" + self._task_name
            ref = _rt.put(label)
            self._label = (region, ref)
        return ref

    def __reduce__(self):
        # Its fields, not its cached label (which names this process's
        # runtime), nor this handle's count of pending calls.
        ref = self._ref
        if type(ref) is _WeakRef:
            ref = ref.strong()               # a copy sent elsewhere holds the actor
        return (ActorMethod, (ref, self._slot, None if self._pending is None else [],
                              self._max_pending, self._cls, self._name, self._mode,
                              self._retries, self._retry_exc, self._group, self._task_name))

    def __call__(self, *args, **kwargs):
        raise TypeError("Actor methods cannot be called directly. Instead of running "
                        "'object.%s()', try 'object.%s.remote()'." % (self._name, self._name))

    # Queues a call; returns its ref(s).  In C (_rt.actor_method_remote) once
    # the method's label is stored in this runtime, unless the handle counts
    # pending calls or the method streams; those take _remote.
    remote = _rt.actor_method_remote

    def _remote(self, args, kwargs):
        ref = self._ref
        if type(ref) is _WeakRef:
            ref = ref.strong()               # the call holds the actor while pending
        pending = self._pending
        if pending is None:
            out = _rt.submit_actor_call(ref, self._slot, self._name, args, kwargs or None,
                                        self._nret, self._retries, self._extras,
                                        self._label_ref())
            if self._streaming:
                from nanoray._generator import ObjectRefGenerator
                return ObjectRefGenerator(out[0], None, out[1])
            return out
        # max_pending_calls: counted per handle, as in Ray.
        if len(pending) >= self._max_pending and _rt.pending_count(pending) >= self._max_pending:
            raise exceptions.PendingCallsLimitExceeded(
                "The actor %s has %d calls pending from this handle, and max_pending_calls=%d"
                % (self._cls, len(pending), self._max_pending))
        out = _rt.submit_actor_call(ref, self._slot, self._name, args, kwargs or None,
                                    self._nret, self._retries, self._extras, self._label_ref())
        if self._nret:
            # A stream is pending until it has ended (its completion return).
            pending.append(out[1] if self._streaming else
                           out if self._nret == 1 else out[0])
        if self._streaming:
            from nanoray._generator import ObjectRefGenerator
            return ObjectRefGenerator(out[0], None, out[1])
        return out

    def options(self, **options):
        for k in options:
            if k not in ("num_returns", "max_task_retries", "retry_exceptions",
                         "concurrency_group", "name", "enable_task_events"):
                raise ValueError("Invalid option keyword %s for actor methods." % (k,))
        n = options.get("num_returns", self._mode)
        check_num_returns(n)
        r = options.get("max_task_retries", self._retries)
        e = options.get("retry_exceptions", self._retry_exc)
        check_retry_exceptions(e)
        name = options.get("name", self._task_name)
        check_task_name(name)
        g = options.get("concurrency_group", self._group)
        if g is not None and (not isinstance(g, str) or not g):
            raise ValueError("concurrency_group must be a non-empty str, got %r" % (g,))
        if g is not None and self._groups is not None and g not in self._groups:
            raise ValueError("the actor %s has no concurrency group %r (its groups: %s)"
                             % (self._cls, g, sorted(self._groups)))
        m = ActorMethod(self._ref, self._slot, self._pending, self._max_pending, self._cls,
                        self._name, n, r, e, g, name)
        m._groups = self._groups
        return m

    def bind(self, *args, **kwargs):
        """A DAG node calling this method of this live actor (nanoray.dag)."""
        from nanoray.dag import ClassMethodNode
        return ClassMethodNode(_FixedMethod(self), self._name, args, kwargs)


class _FixedMethod:
    """What a ClassMethodNode bound on a live actor's method calls: this
    very method (with its options), whatever name it is asked for."""

    def __init__(self, method):
        self._method = method

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._method


def get_actor(name, namespace=None):
    """The handle of the live actor named `name` (ValueError if none)."""
    if not isinstance(name, str) or not name:
        raise ValueError("Please supply a non-empty value to get_actor")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError("namespace must be a str or None, got %r" % (type(namespace).__name__,))
    backend = _api._get_backend()
    if backend.remote:
        return backend.get_actor(name, namespace)
    ns = namespace or backend.namespace
    found = _rt.actor_lookup(ns + _NAME_SEP + name)
    ref = _rt.ref_if_alive(found[0]) if found is not None else None
    if ref is None:
        raise ValueError("Failed to look up actor with name '%s'. This could because 1. You "
                         "are trying to look up a named actor you didn't create. 2. The named "
                         "actor died. 3. You did not use a namespace matching the namespace of "
                         "the actor." % (name,))
    desc = _rt.get_one(ref, None)
    return ActorHandle(ref, found[1], found[2], desc)


def kill(actor, *, no_restart=True):
    """Kills the actor's process at once (SIGKILL).  Its pending calls fail
    with ActorDiedError; with no_restart=False it restarts if max_restarts
    allows."""
    if not isinstance(actor, ActorHandle):
        raise ValueError("nanoray.kill() only supported for actors. For tasks, try "
                         "nanoray.cancel(). Got: %r." % (type(actor).__name__,))
    b = _api._get_backend()
    if b.remote:
        return b.kill(actor, bool(no_restart))
    _rt.actor_kill(actor._slot, actor._gen, bool(no_restart))


def exit_actor():
    """Ends the actor this runs in, after the current call: queued calls fail
    with ActorDiedError, and it is not restarted."""
    b = _api._backend
    if b is not None and b.remote:
        b.ray.actor.exit_actor()
    if _rt.current_actor_slot() is None:
        raise TypeError("exit_actor API is called on a non-actor worker.")
    raise SystemExit(0)
