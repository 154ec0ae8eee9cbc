"""@remote functions: RemoteFunction and its options."""

import inspect
import operator
import numbers
import threading
import weakref

from nanoray import _api, _runtime_env
from nanoray._core import _runtime as _rt

# Options that change what a task does here, with Ray's defaults.
_DEFAULTS = {"num_returns": 1, "num_cpus": 1, "max_retries": 3, "retry_exceptions": False,
             "runtime_env": None, "num_gpus": 0, "resources": None, "memory": None,
             # a worker leaves after running the function this many times (0: never)
             "max_calls": 0,
             # what get_task_name() and a failure's header call the task
             # (None: the function's name)
             "name": None,
             "scheduling_strategy": None, "placement_group": None,
             "placement_group_bundle_index": None, "placement_group_capture_child_tasks": None,
             # nanoray's own: the task's top-level array arguments arrive as
             # writable copy-on-write views (as from get(ref, writable=True))
             "writable_args": False}
# Options Ray accepts that have no effect on one machine; accepted so that
# Ray code runs unchanged.
_NO_EFFECT = {"accelerator_type", "_metadata", "label_selector", "enable_task_events",
              "_generator_backpressure_num_objects"}
# num_returns for generators: values streamed as yielded (Ray's default for
# generator functions), or all stored, then one ref to their refs.
GENERATOR_MODES = ("streaming", "dynamic")

# Every RemoteFunction holding an export of the running runtime.  Its cached
# ref keeps that runtime's Region (and so the store's mapping) alive, so
# shutdown() drops them all (forget_exports).
_exported = weakref.WeakSet()
_exported_lock = threading.Lock()


def forget_exports():
    """Drops the exports every RemoteFunction (and actor class) caches, so that
    a runtime that was shut down is no longer mapped because of them."""
    with _exported_lock:
        functions = list(_exported)
        _exported.clear()
    for rf in functions:
        rf._ref = None          # a later .remote() exports it to the new runtime
        rf._ref_region = None
        rf._plain = None


def validate_options(opts):
    """Checks remote-function options; returns them with clear errors for bad ones."""
    for key, value in opts.items():
        if key not in _DEFAULTS and key not in _NO_EFFECT:
            raise ValueError("Invalid option keyword %s for remote functions." % (key,))
    check_num_returns(opts.get("num_returns"))
    check_retry_exceptions(opts.get("retry_exceptions"))
    check_task_name(opts.get("name"))
    c = opts.get("num_cpus")
    if c is not None and (not isinstance(c, numbers.Real) or isinstance(c, bool) or c < 0):
        raise ValueError("num_cpus must be a number >= 0, got %r" % (c,))
    r = opts.get("max_retries")
    if r is not None and (not isinstance(r, int) or isinstance(r, bool) or r < -1):
        raise ValueError("max_retries must be an int >= -1 (-1: retry forever), got %r" % (r,))
    m = opts.get("max_calls")
    if m is not None and (not isinstance(m, int) or isinstance(m, bool) or m < 0):
        raise ValueError("max_calls must be an int >= 0 (0: no limit), got %r" % (m,))
    check_resources(opts)
    check_scheduling(opts)
    _runtime_env.validate(opts.get("runtime_env"))
    return opts


def check_task_name(name):
    """A task's (or actor call's) name= option: a str or None, as in Ray."""
    if name is not None and not isinstance(name, str):
        raise TypeError("The type of keyword 'name' must be (<class 'str'>, <class 'NoneType'>), "
                        "but received type %s" % (type(name),))


def check_scheduling(opts):
    """scheduling_strategy and Ray's older placement_group= options
    (nanoray.util.scheduling_strategies); whether a node affinity can be
    met is decided at the call."""
    from nanoray.util import scheduling_strategies as ss
    s = ss.normalize(opts)
    if s is not None and not isinstance(s, (ss.NodeAffinitySchedulingStrategy,
                                            ss.NodeLabelSchedulingStrategy)):
        ss.check(s)                      # a placement group is checked; others raise


def placement_of(strategy):
    """(pool, (group, capture)) for a PlacementGroupSchedulingStrategy, else
    (0, None)."""
    from nanoray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    if not isinstance(strategy, PlacementGroupSchedulingStrategy):
        return 0, None
    from nanoray.util.placement_group import _pool_of
    pg = strategy.placement_group
    pool = _pool_of(pg, strategy.placement_group_bundle_index)
    if pool is None:
        raise ValueError("the placement group %s belongs to a runtime that was shut down"
                         % pg.id.hex())
    return pool, (pg, bool(strategy.placement_group_capture_child_tasks))


def check_resources(opts):
    """num_gpus, memory and resources={...}, as Ray checks them."""
    g = opts.get("num_gpus")
    if g is not None:
        if not isinstance(g, numbers.Real) or isinstance(g, bool) or not g >= 0:
            raise ValueError("num_gpus must be a number >= 0, got %r" % (g,))
        if g > 1 and g != int(g):
            raise ValueError("num_gpus above 1 must be a whole number, got %r" % (g,))
    m = opts.get("memory")
    if m is not None and (not isinstance(m, numbers.Real) or isinstance(m, bool) or not m >= 0):
        raise ValueError("memory must be a number of bytes >= 0, got %r" % (m,))
    res = opts.get("resources")
    if res is not None:
        if not isinstance(res, dict):
            raise TypeError("resources must be a dict of name to amount, got %r" % (res,))
        for name, amount in res.items():
            if name in ("CPU", "GPU", "memory"):
                raise ValueError("Use the 'num_cpus', 'num_gpus' and 'memory' keywords instead "
                                 "of %r in 'resources'" % (name,))
            if not isinstance(name, str) or not isinstance(amount, numbers.Real) or \
                    isinstance(amount, bool) or not amount >= 0:
                raise ValueError("resources must map names to amounts >= 0, got %r: %r"
                                 % (name, amount))


def resource_demand(opts):
    """{name: amount} beyond CPUs that options ask for, or None."""
    d = dict(opts.get("resources") or {})
    if opts.get("num_gpus"):
        d["GPU"] = opts["num_gpus"]
    if opts.get("memory"):
        d["memory"] = opts["memory"]
    d = {k: v for k, v in d.items() if v}
    return d or None


_infeasible_warned = set()


def warn_infeasible(what, cpus_milli, demand, table):
    """Ray's infeasible-task warning, once per shape: the call stays pending."""
    need = {"CPU": cpus_milli / 1000.0}
    need.update(demand or {})
    have = {name: total for name, (total, _) in table.items()}
    short = {k: v for k, v in need.items() if v and v > have.get(k, 0)}
    if not short:
        return False
    key = (what, tuple(sorted(need.items())))
    if key not in _infeasible_warned:
        _infeasible_warned.add(key)
        import warnings
        warnings.warn(
            "The %s cannot be scheduled: it requires %s, but this machine has %s in total. "
            "It stays pending (infeasible), and holds up no other task." % (
                what, {k: v for k, v in need.items() if v},
                {k: have.get(k, 0.0) for k in need}), RuntimeWarning, stacklevel=4)
    return True


def check_num_returns(n):
    if n is None or n in GENERATOR_MODES:
        return
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError('num_returns must be an int >= 0, "streaming" or "dynamic", got %r'
                         % (n,))


def check_retry_exceptions(r):
    """retry_exceptions: a bool, or a list (or tuple) of exception types."""
    if r is None or isinstance(r, bool):
        return
    if isinstance(r, (list, tuple)) and r and all(
            isinstance(e, type) and issubclass(e, BaseException) for e in r):
        return
    raise TypeError("retry_exceptions must be a bool or a list of exception types, got %r"
                    % (r,))


def explicit_strategy(opts):
    return "scheduling_strategy" in opts or "placement_group" in opts


def inherit(explicit, extras):
    """What a call made inside a task or actor takes from it: its
    runtime_env (merged under the call's own), and its placement group when
    that captures child tasks and the call names no strategy of its own.
    Returns (extras, pool)."""
    pool = 0
    if _runtime_env.current is not None:
        extras = dict(extras) if extras else {}
        extras["env"] = _runtime_env.merge(_runtime_env.current, extras.get("env"))
    cur = _runtime_env.current_pg
    if cur is not None and cur[1] and not explicit:
        from nanoray.util.placement_group import _pool_of
        pool = _pool_of(cur[0], -1) or 0
        if pool:
            extras = dict(extras or {}, pg=cur)
    return extras, pool


def call_extras(num_returns, retry_exceptions, runtime_env=None, writable_args=False,
                max_calls=0):
    """What a call's worker needs beyond the call itself (None: nothing,
    the common case, which keeps the argument payload as small as before)."""
    extras = None
    if num_returns in GENERATOR_MODES:
        extras = {"gen": num_returns}
    if retry_exceptions:
        extras = extras or {}
        extras["retry_exceptions"] = (True if retry_exceptions is True
                                      else tuple(retry_exceptions))
    if runtime_env:
        extras = extras or {}
        extras["env"] = runtime_env
    if writable_args:
        extras = extras or {}
        extras["writable_args"] = True
    if max_calls:
        extras = extras or {}
        extras["max_calls"] = max_calls
    return extras


def _signature_check(function):
    """A callable that raises TypeError, at .remote() as in Ray, when the
    arguments do not fit the function; None when there is no signature, or
    it takes anything.
    Plain positional calls of functions without *args/**kwargs/keyword-only
    parameters take a fast path (a length check)."""
    try:
        sig = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if [p.kind for p in params] == [inspect.Parameter.VAR_POSITIONAL,
                                    inspect.Parameter.VAR_KEYWORD]:
        return None                              # (*args, **kwargs) takes anything
    name = getattr(function, "__name__", "function")

    def bind(args, kwargs):
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError("%s(): %s" % (name, e)) from None
    if all(p.kind == p.POSITIONAL_OR_KEYWORD for p in params):
        most = len(params)
        least = sum(1 for p in params if p.default is p.empty)

        def check(args, kwargs):
            if kwargs or not least <= len(args) <= most:
                bind(args, kwargs)
        check.bounds = (least, most)      # for .remote()'s C path (_rt.PlainCall)
        return check
    return bind


class _Options:
    __slots__ = ("num_returns", "cpus_milli", "max_retries", "extras", "streaming", "demand",
                 "special", "strategy", "explicit", "_res", "_res_session", "name", "given")

    def __init__(self, opts, is_generator=False, name="task"):
        self.given = opts                 # as given (merged): what another backend takes
        merged = dict(_DEFAULTS)
        if is_generator:
            merged["num_returns"] = "streaming"     # Ray's default for generators
        merged.update({k: v for k, v in opts.items() if k in _DEFAULTS and v is not None})
        n = merged["num_returns"]
        # A streaming generator's returns: its first cell, and what
        # completed() gives (sealed at its end).
        self.num_returns = (2 if n == "streaming" else 1) if n in GENERATOR_MODES else n
        self.streaming = n == "streaming"
        self.cpus_milli = int(round(merged["num_cpus"] * 1000))
        self.max_retries = merged["max_retries"]
        self.extras = call_extras(n, merged["retry_exceptions"],
                                  _runtime_env.validate(merged["runtime_env"]),
                                  bool(merged["writable_args"]), merged["max_calls"])
        if merged["name"]:
            self.extras = dict(self.extras or (), name=merged["name"])
        self.demand = resource_demand(merged)
        from nanoray.util.scheduling_strategies import normalize
        self.strategy = normalize(merged)
        # A strategy given, even "DEFAULT" or placement_group=None, opts out
        # of a capturing parent's group (as in Ray).
        self.explicit = explicit_strategy(opts)
        # Looked at per runtime: resources beyond CPUs, more CPUs than one,
        # or a node affinity.
        self.special = (self.demand is not None or self.cpus_milli > 1000
                        or self.strategy is not None)
        self._res = None
        self._res_session = None
        self.name = name

    def resources(self):
        """The NR_RES vector for this runtime (None: CPUs only); warns once
        if the call can never be scheduled here."""
        region = _rt.current_region()
        if self._res_session != region.session:
            vec, missing = _rt.demand(self.demand) if self.demand else (None, [])
            warn_infeasible("task %s()" % self.name, self.cpus_milli, self.demand,
                            _rt.resource_table())
            self._res = _unmeetable(vec or (0,) * 8) if missing else vec
            self._res_session = region.session
        return self._res


def _strategy_met(strategy):
    from nanoray.util.scheduling_strategies import check
    return check(strategy)


def _unschedulable(o, function, items=None):
    """What a call with a hard node affinity to another node returns: refs
    that raise TaskUnschedulableError, as Ray's do (at once, not pending);
    for f.map(), one per item."""
    from nanoray import exceptions
    err = exceptions.TaskUnschedulableError(
        "The task %s() is unschedulable: its NodeAffinitySchedulingStrategy names node %s, "
        "which is not this machine, and soft=False was specified."
        % (getattr(function, "__name__", "task"), getattr(o.strategy, "node_id", "?")))
    if items is not None:
        return [_rt.put_error(err) for _ in items]
    refs = [_rt.put_error(err) for _ in range(max(o.num_returns, 1))]
    if o.streaming:
        from nanoray._generator import ObjectRefGenerator
        return ObjectRefGenerator(refs[0], (), refs[1])
    if o.num_returns == 0:
        return None
    return refs[0] if o.num_returns == 1 else refs


def _unmeetable(vec):
    """A vector no runtime can meet (a resource it does not have): the last
    custom kind, asked for more than any total."""
    vec = list(vec)
    vec[7] = 2 ** 31 - 1
    return tuple(vec)


class RemoteFunction:
    """A function run as a task by .remote(); calling it directly is an error."""

    def __init__(self, function, options):
        if inspect.iscoroutinefunction(function):
            # As Ray: refused here, not when the task's coroutine cannot be stored.
            raise ValueError("'async def' should not be used for remote tasks. You can wrap "
                             "the async function with `asyncio.run(f())`; async actor "
                             "methods run on the actor's event loop.")
        self._function = function
        self._options = dict(options)
        if (self._options.get("num_gpus") or 0) > 0 and self._options.get("max_calls") is None:
            # As in Ray: a GPU function's worker leaves after each call (its
            # CUDA context, and the device memory it holds, go with it).
            self._options["max_calls"] = 1
        self._is_generator = (inspect.isgeneratorfunction(function)
                              or inspect.isasyncgenfunction(function))
        self._compiled = _Options(self._options, self._is_generator,
                                  getattr(function, "__name__", "task"))
        self._check = _signature_check(function)
        self._plain = None          # what .remote()'s C path needs, after a first call
        self._ref = None            # the exported function in the current runtime, once sealed
        self._ref_region = None
        self._reserving = None      # the export being written: its id goes into the pickle
        self._export_hint = None    # (session, id) of the export a pickled copy came from
        self._export_lock = threading.Lock()
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            try:
                setattr(self, attr, getattr(function, attr))
            except AttributeError:
                pass

    def __call__(self, *args, **kwargs):
        name = getattr(self._function, "__name__", "f")
        raise TypeError("Remote functions cannot be called directly. Instead of running "
                        "'%s()', try '%s.remote()'." % (name, name))

    # Submits a task; returns its ObjectRef (a list of them if num_returns > 1).
    # In C: a call without keyword arguments, once the function's first call
    # has left a PlainCall here (see _submit), is written and queued without
    # running any Python; any other call takes _submit.
    remote = _rt.remote_function_remote

    def map(self, /, *iterables, chunksize=None):
        """f.remote(*item) for each item of zip(*iterables), submitted in
        batches: returns one ObjectRef per item, in order (not an addition
        Ray has; on the Ray backend it is a loop of f.remote).

        Items go chunksize to a task (default: 4 tasks per CPU, at most
        1024 items each), which calls f on each in turn and seals each
        value as it returns: an item that raises fails its own ref only;
        retry_exceptions retries each item (on its arguments loaded
        again); max_retries re-runs a chunk whose worker died or called
        sys.exit(), skipping the items already done, and without retries
        left the items not done fail with WorkerCrashedError.  Cancelling
        one ref cancels the items of its chunk not yet done.  An item that
        passes an ObjectRef runs as its own task, so the ref's value is
        what f receives.  A chunk's arguments travel as one payload: one
        that cannot be rebuilt in the worker fails its chunk's items."""
        return self._map(iterables, chunksize, self._compiled)

    def bind(self, *args, **kwargs):
        """A DAG node for this call (nanoray.dag), run by .execute()."""
        from nanoray.dag import FunctionNode
        return FunctionNode(self, args, kwargs)

    def options(self, **options):
        """A copy of this function with some options replaced, for .remote()."""
        if "max_calls" in options:       # as in Ray: a worker counts the function's calls
            raise ValueError("Setting 'max_calls' is not supported in '.options()'.")
        validate_options(options)
        merged = dict(self._options)
        merged.update(options)
        return _Bound(self, _Options(merged, self._is_generator,
                                     getattr(self._function, "__name__", "task")))

    def _bind_with(self, o, args, kwargs):
        from nanoray.dag import FunctionNode
        return FunctionNode(_Bound(self, o), args, kwargs)

    def _map(self, iterables, chunksize, o):
        if not iterables:
            raise TypeError("map() takes at least one iterable")
        if chunksize is not None:
            try:
                n = 0 if isinstance(chunksize, bool) else operator.index(chunksize)
            except TypeError:                                  # (numpy's integers pass)
                n = 0
            if n < 1:
                raise ValueError("chunksize must be a positive int, got %r" % (chunksize,))
            chunksize = n
        if self._is_generator or o.num_returns != 1 or (o.extras and "gen" in o.extras):
            raise ValueError("%s.map() needs a function with num_returns=1 that is not a "
                             "generator: it returns one ref per item"
                             % getattr(self._function, "__name__", "f"))
        items = list(zip(*iterables))
        if not items:
            return []
        if self._check is not None:           # every item has as many arguments
            self._check(items[0], {})
        b = _api._backend or _api._auto_init()
        if b.remote or (o.extras and "max_calls" in o.extras):
            # max_calls counts each item as a call (and each retry): one
            # task per item, as on Ray
            return [self._submit(item, {}, o) for item in items]
        return self._submit(None, None, o, items, chunksize or 0)

    def _submit(self, args, kwargs, o, items=None, chunksize=0):
        """A task, or for f.map() (items given) the tasks of its chunks."""
        check = self._check
        if check is not None and items is None:
            check(args, kwargs)
        b = _api._backend or _api._auto_init()
        if b.remote:
            return b.submit(self, args, kwargs, o.given)
        ref = self._current_export()
        extras = o.extras
        pool = 0
        if _rt.inheriting():                  # inside a task: its env, its group
            extras, pool = inherit(o.explicit, extras)
        res = None
        if o.special or pool:
            if o.strategy is not None:
                if not _strategy_met(o.strategy):
                    return _unschedulable(o, self._function, items)
                pool, pg = placement_of(o.strategy)
                if pg is not None:
                    extras = dict(extras or {}, pg=pg)
            if pool:
                from nanoray.util.placement_group import check_fits
                index = getattr(o.strategy, "placement_group_bundle_index", -1)
                check_fits(extras["pg"][0], index, o.cpus_milli, o.demand,
                           getattr(self._function, "__qualname__", "task"))
            res = o.resources() if o.special else None
        if items is not None:
            extras = dict(extras or {}, map=True, retries=o.max_retries)
            return _rt.submit_map(ref, items, chunksize, o.cpus_milli, extras, res, pool,
                                  lambda item: self._submit(item, {}, o))
        if o.special or pool:
            out = _rt.submit(ref, args, kwargs, o.num_returns, o.cpus_milli, o.max_retries,
                             extras, res, pool)
            if o.streaming:
                from nanoray._generator import ObjectRefGenerator
                return ObjectRefGenerator(out[0], None, out[1])
            return out
        if extras is not None:
            out = _rt.submit(ref, args, kwargs, o.num_returns, o.cpus_milli, o.max_retries,
                             extras)
            if o.streaming:
                from nanoray._generator import ObjectRefGenerator
                return ObjectRefGenerator(out[0], None, out[1])
            return out
        if o.num_returns == 0:
            _rt.submit(ref, args, kwargs, 0, o.cpus_milli, o.max_retries)
            return None
        out = _rt.submit(ref, args, kwargs, o.num_returns, o.cpus_milli, o.max_retries)
        plain = self._plain
        if o is self._compiled and o.num_returns == 1 and not o.streaming and \
                (plain is None or not plain.current()):   # none yet, or one of a runtime gone
            bounds = (0, 1 << 62) if check is None else getattr(check, "bounds", None)
            if bounds is not None:           # the next calls take the C path
                self._plain = _rt.PlainCall(ref, o.cpus_milli, o.max_retries, *bounds)
        return out

    def _current_export(self):
        """The ref of this function's export in the running runtime."""
        ref = self._ref
        if ref is None or _rt.current_region() is not self._ref_region:
            with self._export_lock:           # one export, even from many threads
                ref = self._ref
                if ref is None or _rt.current_region() is not self._ref_region:
                    ref = self._export()
        return ref

    def _export(self):
        region = _rt.current_region()
        ref = None
        hint = self._export_hint
        if hint is not None and hint[0] == region.session:
            # A copy unpickled in a worker uses the driver's export while it
            # lives, instead of storing the function again.
            ref = _rt.ref_if_alive(hint[1])
        if ref is None:
            try:
                ref = _rt.export_function(self._function, self._reserved)
            finally:
                self._reserving = None
        # Published only once sealed: a task must never name a function
        # that is still being written.
        self._ref = ref
        self._ref_region = region
        with _exported_lock:
            _exported.add(self)
        return ref

    def _reserved(self, ref):
        self._reserving = ref

    def __getstate__(self):
        # Not the ref itself: a payload holding a ref to the function's own
        # export would keep it alive forever.  Its id and the runtime's
        # session instead; the copy takes a count only if it still lives.
        state = {"_function": self._function, "_options": self._options}
        region = _rt.current_region()
        ref = self._reserving           # pickled during its own export
        if ref is None and self._ref is not None and self._ref_region is region:
            ref = self._ref
        if ref is not None and region is not None:
            state["_export_hint"] = (region.session, ref._id)
        return state

    def __setstate__(self, state):
        self.__init__(state["_function"], state["_options"])
        self._export_hint = state.get("_export_hint")


class _Bound:
    """What .options() returns: the function (or actor class) with options fixed."""

    __slots__ = ("_rf", "_o")

    def __init__(self, rf, o):
        self._rf = rf
        self._o = o

    def remote(self, /, *args, **kwargs):
        return self._rf._submit(args, kwargs, self._o)

    def map(self, /, *iterables, chunksize=None):
        """f.map() with these options (RemoteFunction.map)."""
        return self._rf._map(iterables, chunksize, self._o)

    def bind(self, *args, **kwargs):
        """A DAG node for this call with these options (nanoray.dag)."""
        return self._rf._bind_with(self._o, args, kwargs)


def remote(*args, **options):
    """Makes a function remote: ``@remote`` or ``@remote(num_cpus=2, ...)``."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make(args[0], {})
    if args:
        raise TypeError("The @remote decorator must be applied either with no arguments "
                        "and no parentheses, for example '@remote', or it must be applied "
                        "using keyword arguments, for example '@remote(num_returns=2)'.")
    return lambda f: _make(f, options)      # validated there: function or actor options


def _make(obj, options):
    if isinstance(obj, type):
        from nanoray.actor import ActorClass
        return ActorClass(obj, options)
    if not callable(obj):
        raise TypeError("@remote applies to functions and classes, got %r"
                        % (type(obj).__name__,))
    validate_options(options)
    return RemoteFunction(obj, options)
