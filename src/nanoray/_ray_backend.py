"""The Ray backend: the same API, run on Ray.

``init(address="auto" | "ray://host:port" | "host:port")`` runs every call
on that Ray cluster; ``init(backend="ray")`` or ``NANORAY_BACKEND=ray``
starts a local Ray instead, so that an unchanged script can be tried on
Ray.  Ray is an optional extra (``pip install 'nanoray[ray]'``).

What the user holds keeps nanoray's types: a ref is a nanoray ObjectRef
(RayRef, which wraps Ray's), a generator task returns a nanoray
ObjectRefGenerator, an actor handle is a nanoray ActorHandle, and errors
are nanoray.exceptions (a task's error is a nanoray RayTaskError that is
also an instance of the original type, as on the local backend).

How it goes through Ray:
- a remote function or actor class is handed to ray.remote wrapped, so
  that its process (a Ray worker) attaches to this backend before the
  user's code runs: nanoray.get, .remote() and the rest inside a task go
  to Ray too;
- refs given as top-level arguments are passed to Ray as Ray's refs
  (resolved before the task runs, as on both backends); refs nested in
  values pickle as Ray's refs inside a small wrapper (Ray tracks them as
  it tracks its own nested refs) and arrive as nanoray refs."""

import concurrent.futures
import functools
import inspect
import os
import re
import threading

from nanoray import exceptions
from nanoray._core._runtime import ObjectRef

_ray = None
_RayPlacementGroup = None


def import_ray():
    global _ray, _RayPlacementGroup
    if _ray is None:
        try:
            import ray
        except ImportError as e:
            raise ImportError(
                "nanoray's Ray backend (init(address=...), init(backend=\"ray\"), "
                "NANORAY_BACKEND=ray) needs Ray, which is not installed: "
                "pip install 'nanoray[ray]'") from e
        import importlib
        _RayPlacementGroup = importlib.import_module("ray.util.placement_group").PlacementGroup
        _ray = ray
    return _ray


# -- refs ----------------------------------------------------------------------

class RayRef(ObjectRef):
    """A nanoray ObjectRef that holds a Ray ObjectRef (``_r``)."""

    __slots__ = ("_r",)

    def __init__(self, r):
        self._r = r

    def hex(self):
        return self._r.hex()

    def binary(self):
        return self._r.binary()

    def __repr__(self):
        return "ObjectRef(%s)" % self._r.hex()

    def __hash__(self):
        return hash(self._r)

    def __eq__(self, other):
        return type(other) is RayRef and other._r == self._r

    def __ne__(self, other):
        return not self.__eq__(other)

    def __reduce__(self):
        # Ray's pickler sees the Ray ref inside and tracks it as a nested
        # ref (borrowing, lifetime) exactly as it tracks its own.
        return (_rebuild_ref, (self._r,))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __await__(self):
        return _awaited(self._r).__await__()

    def future(self):
        """A concurrent.futures.Future of the value, with nanoray's errors."""
        out = concurrent.futures.Future()

        def done(f):
            try:
                out.set_result(_wrap_value(f.result()))
            except BaseException as e:
                out.set_exception(translate(e))
        self._r.future().add_done_callback(done)
        return out


def _rebuild_ref(r):
    attach()
    return RayRef(r)


async def _awaited(r):
    try:
        return _wrap_value(await r)
    except BaseException as e:
        raise translate(e) from None


def _unwrap(x):
    return x._r if type(x) is RayRef else x


def _unwrap_args(args, kwargs, task=False):
    """Top-level refs go to Ray as Ray's refs: Ray resolves them to values."""
    return (tuple([_unwrap(a) for a in args]),
            {(_SELF if task and k == "self" else k): _unwrap(v) for k, v in kwargs.items()}
            if kwargs else {})


def _wrap_out(out):
    """What Ray's .remote() returned, in nanoray's types."""
    ray = _ray
    if out is None:
        return None
    if isinstance(out, ray.ObjectRef):
        return RayRef(out)
    if isinstance(out, ray.ObjectRefGenerator):
        return RayRefGenerator(out)
    if isinstance(out, list):
        return [_wrap_out(r) for r in out]
    return out


def _wrap_value(v):
    """A value from Ray's get: a dynamic generator's refs become nanoray's,
    and so does a placement group (what pg.ready() resolves to)."""
    ray = _ray
    dyn = getattr(ray, "DynamicObjectRefGenerator", None)
    if dyn is not None and type(v) is dyn:
        from nanoray._generator import DynamicObjectRefGenerator
        return DynamicObjectRefGenerator([RayRef(r) for r in v])
    if type(v) is _RayPlacementGroup:
        return wrap_pg(v)
    return v


# -- placement groups ------------------------------------------------------------

_pg_cls = None


def wrap_pg(pg):
    """Ray's placement group as a nanoray PlacementGroup (None stays None)."""
    global _pg_cls
    if pg is None:
        return None
    if _pg_cls is None:
        from nanoray.util.placement_group import PlacementGroup, PlacementGroupID

        class RayPlacementGroup(PlacementGroup):
            """A nanoray PlacementGroup that holds Ray's (``_pg``)."""

            def __init__(self, pg):
                self._pg = pg
                self.id = PlacementGroupID(pg.id.hex())
                self.name = ""
                self.strategy = None
                self._actors = []

            @property
            def bundle_specs(self):
                return self._pg.bundle_specs

            def ready(self):
                return RayRef(self._pg.ready())

            def wait(self, timeout_seconds=30):
                return _call(self._pg.wait, timeout_seconds)

            def __reduce__(self):
                return (_rebuild_pg, (self._pg,))
        _pg_cls = RayPlacementGroup
    return _pg_cls(pg)


def _rebuild_pg(pg):
    attach()
    return wrap_pg(pg)


def _generator_class():
    from nanoray._generator import ObjectRefGenerator

    class RayRefGenerator(ObjectRefGenerator):
        """A nanoray ObjectRefGenerator over Ray's."""

        def __init__(self, g):
            self._g = g
            self._cell = None
            self._task = None

        def __next__(self):
            try:
                return RayRef(next(self._g))
            except StopIteration:
                raise
            except BaseException as e:
                raise translate(e) from None

        def _next_sync(self, timeout_s=None):
            try:
                return RayRef(self._g._next_sync(timeout_s))
            except StopIteration:
                raise
            except BaseException as e:
                raise translate(e) from None

        async def __anext__(self):
            try:
                return RayRef(await self._g.__anext__())
            except StopAsyncIteration:
                raise
            except BaseException as e:
                raise translate(e) from None

        def is_finished(self):
            return self._g.is_finished()

        def completed(self):
            return RayRef(self._g.completed())

        def is_next_ready(self):
            return self._g.next_ready()

        def _ready_ref(self):
            return None if self._g.is_finished() else self._g

        def __reduce__(self):
            return (_rebuild_generator, (self._g,))

        def __repr__(self):
            return "ObjectRefGenerator(ray)"
    return RayRefGenerator


def RayRefGenerator(g):                          # noqa: N802 (a class, made lazily)
    global RayRefGenerator
    cls = _generator_class()
    RayRefGenerator = cls
    return cls(g)


def _rebuild_generator(g):
    attach()
    return RayRefGenerator(g)


# -- errors --------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_HEAD = re.compile(r"ray::([^\s(]+)\(\)?.*?pid=(\d+)")


def translate(e):
    """Ray's exception e as nanoray's (others unchanged)."""
    ray = _ray
    if ray is None or not isinstance(e, ray.exceptions.RayError):
        return e
    if isinstance(e, ray.exceptions.RayTaskError):
        cause = e.cause
        if isinstance(cause, ray.exceptions.RayError):
            cause = translate(cause)
        # A nested task's error, re-raised by the task: its original cause,
        # as on the local backend (so `except KeyError` still catches it).
        while isinstance(cause, exceptions.RayTaskError) and cause.cause is not None:
            cause = cause.cause
        d = e.__dict__        # Ray's dual instance keeps only .cause and its message
        name, tb, pid = d.get("function_name"), d.get("traceback_str"), d.get("pid")
        if name is None or tb is None:
            head, _, rest = _ANSI.sub("", str(e)).partition("\n")
            m = _HEAD.search(head)
            name = name or (m.group(1) if m else "task")
            pid = pid or (int(m.group(2)) if m else None)
            tb = tb or rest
        err = exceptions.RayTaskError(name, tb, cause, pid)
        return err.as_instanceof_cause()
    for cls in type(e).__mro__:
        mine = getattr(exceptions, cls.__name__, None)
        if isinstance(mine, type) and issubclass(mine, exceptions.RayError):
            break
    else:
        mine = exceptions.RaySystemError
    text = _ANSI.sub("", str(e))
    try:
        if issubclass(mine, exceptions.TaskCancelledError):
            out = mine(error_message=text)
        elif issubclass(mine, exceptions.RayActorError):
            out = mine(_ANSI.sub("", getattr(e, "error_msg", None) or text))
        else:
            out = mine(text)
    except Exception:
        out = exceptions.RaySystemError(text)
    out.__cause__ = e
    return out


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except BaseException as e:
        raise translate(e) from None


# -- functions and actors --------------------------------------------------------

# Options that are nanoray's own: handled here, not passed to Ray.
_OWN_OPTIONS = ("writable_args",)


def ray_options(opts):
    """nanoray's options (Ray's names) as Ray takes them."""
    out = {}
    for k, v in opts.items():
        if k in _OWN_OPTIONS or v is None:
            continue
        if k == "scheduling_strategy":
            v = _strategy(v)
        elif k == "placement_group" and v != "default":
            v = getattr(v, "_pg", v)
        out[k] = v
    return out


def _strategy(s):
    """nanoray's strategy objects as Ray's (strings pass as they are)."""
    from nanoray.util import scheduling_strategies as mine
    from ray.util import scheduling_strategies as theirs
    if isinstance(s, mine.PlacementGroupSchedulingStrategy):
        pg = s.placement_group
        return theirs.PlacementGroupSchedulingStrategy(
            getattr(pg, "_pg", pg), s.placement_group_bundle_index,
            s.placement_group_capture_child_tasks)
    if isinstance(s, mine.NodeAffinitySchedulingStrategy):
        return theirs.NodeAffinitySchedulingStrategy(s.node_id, s.soft)
    if isinstance(s, mine.NodeLabelSchedulingStrategy):
        return theirs.NodeLabelSchedulingStrategy(s.hard, soft=s.soft)
    return s


def _writable(args, kwargs):
    import numpy as np

    def copy(v):
        return v.copy() if isinstance(v, np.ndarray) and not v.flags.writeable else v
    return [copy(a) for a in args], {k: copy(v) for k, v in kwargs.items()}


# Ray's .remote(self, *args, **kwargs) cannot take an argument named self:
# it travels under this name and is renamed back in the worker.
_SELF = "_nanoray_self_"


def _has_self(fn):
    try:
        return "self" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def task_wrapper(fn, writable_args=False):
    """fn as Ray runs it: in a worker attached to this backend.  A generator
    stays a generator function (Ray streams those)."""
    renamed = _has_self(fn)

    def _named(kwargs):
        if renamed and _SELF in kwargs:
            kwargs["self"] = kwargs.pop(_SELF)
        return kwargs
    if inspect.isgeneratorfunction(fn):
        def run(*args, **kwargs):
            attach()
            if writable_args:
                args, kwargs = _writable(args, kwargs)
            for item in fn(*args, **_named(kwargs)):      # not yield from: no send()
                yield item
    else:
        def run(*args, **kwargs):
            attach()
            if writable_args:
                args, kwargs = _writable(args, kwargs)
            return fn(*args, **_named(kwargs))
    functools.update_wrapper(run, fn)
    del run.__wrapped__                 # Ray would look through it at fn's signature only
    return run


def actor_wrapper(cls):
    """cls as Ray runs it: a subclass whose __init__ attaches its process to
    this backend, with nanoray.method options given as Ray's."""
    ray = import_ray()
    ns = {"__module__": cls.__module__, "__qualname__": cls.__qualname__,
          "__doc__": cls.__doc__}
    base_init = cls.__init__

    if inspect.iscoroutinefunction(base_init):
        async def __init__(self, *args, **kwargs):        # Ray awaits it
            attach()
            await base_init(self, *args, **kwargs)
    else:
        def __init__(self, *args, **kwargs):
            attach()
            base_init(self, *args, **kwargs)
    ns["__init__"] = __init__
    for name, member in inspect.getmembers(cls):
        func = getattr(member, "__func__", member)
        opts = getattr(func, "__nanoray_method_options__", None)
        if opts and callable(member):
            ns[name] = ray.method(**opts)(func)
    return type(cls.__name__, (cls,), ns)


class RayActorMethod:
    __slots__ = ("_m", "_handle", "_name", "_opts")

    def __init__(self, m, handle, name, opts=None):
        self._m = m
        self._handle = handle
        self._name = name
        self._opts = opts

    def __call__(self, *args, **kwargs):
        raise TypeError("Actor methods cannot be called directly. Instead of running "
                        "'object.%s()', try 'object.%s.remote()'." % (self._name, self._name))

    def remote(self, /, *args, **kwargs):
        args, kwargs = _unwrap_args(args, kwargs)
        return _wrap_out(_call(self._m.remote, *args, **kwargs))

    def options(self, **options):
        return RayActorMethod(self._m.options(**ray_options(options)), self._handle,
                              self._name, dict(self._opts or {}, **options))

    def bind(self, *args, **kwargs):
        from nanoray.dag import ClassMethodNode
        return ClassMethodNode(self._handle, self._name, args, kwargs, self._opts)


def handle_class():
    from nanoray.actor import ActorHandle, HexID

    class RayActorHandle(ActorHandle):
        """A nanoray ActorHandle that holds a Ray actor handle (``_h``)."""

        def __init__(self, h):
            self.__dict__["_h"] = h

        def __dir__(self):
            return sorted(set(object.__dir__(self)) | set(dir(self.__dict__["_h"])))

        def __getattr__(self, name):
            if name.startswith("__") and name not in ("__ray_terminate__", "__ray_ready__",
                                                      "__call__"):
                raise AttributeError(name)
            try:
                m = getattr(self.__dict__["_h"], name)
            except AttributeError:
                raise AttributeError("'%s' actor has no method '%s'"
                                     % (self._class_name(), name)) from None
            return RayActorMethod(m, self, name)

        def _class_name(self):
            h = self.__dict__["_h"]
            return getattr(h, "_ray_actor_creation_function_descriptor",
                           None).class_name.rsplit(".", 1)[-1] if hasattr(
                h, "_ray_actor_creation_function_descriptor") else "Actor"

        def __reduce__(self):
            return (_rebuild_handle, (self.__dict__["_h"],))

        def __repr__(self):
            return "Actor(%s, %s)" % (self._class_name(), self._actor_id_hex())

        def __eq__(self, other):
            return isinstance(other, RayActorHandle) and \
                other._actor_id_hex() == self._actor_id_hex()

        def __hash__(self):
            return hash(self._actor_id_hex())

        def _actor_id_hex(self):
            return self.__dict__["_h"]._actor_id.hex()

        @property
        def _actor_id(self):
            return HexID(self._actor_id_hex())
    return RayActorHandle


_handle_cls = None


def wrap_handle(h):
    global _handle_cls
    if _handle_cls is None:
        _handle_cls = handle_class()
    return _handle_cls(h)


def _rebuild_handle(h):
    attach()
    return wrap_handle(h)


# -- the backend -------------------------------------------------------------------

class RayBackend:
    """Every call on Ray: a cluster (address), a local Ray it started, or,
    in a Ray worker, the Ray that runs it."""

    remote = True
    zygote = None
    ray_context = None

    def __init__(self, ray, owned):
        self.ray = ray
        self.owned = owned            # started or connected by this process's init()
        self.pid = os.getpid()
        self._cache_lock = threading.Lock()

    @classmethod
    def start(cls, address, init_kwargs):
        ray = import_ray()
        kwargs = {k: v for k, v in init_kwargs.items() if v is not None}
        from nanoray.job_config import as_rays
        as_rays(ray, kwargs)
        if "memory" in kwargs:
            kwargs["_memory"] = kwargs.pop("memory")      # Ray's name for it in init()
        kwargs.setdefault("include_dashboard", False)
        if address in ("local",):
            address = None
        b = cls(ray, True)
        b.ray_context = ray.init(address=address, **kwargs)
        from nanoray import cloudpickle as mine
        from nanoray.util import serialization
        mine.sync_to_ray()
        serialization.sync_to_ray(ray)
        return b

    def context(self, context_class):
        """init()'s return value: Ray's context's fields, backend "ray"."""
        info = dict(self.ray_context.address_info) if self.ray_context is not None else {}
        url = getattr(self.ray_context, "dashboard_url", None) or None
        return context_class(info, num_cpus=self.num_cpus, dashboard_url=url,
                             address_info=dict(info), backend="ray")

    @property
    def num_cpus(self):
        return self.ray.cluster_resources().get("CPU", 0)

    @property
    def namespace(self):
        return self.ray.get_runtime_context().namespace

    def stop(self):
        if self.owned and self.pid == os.getpid():
            self.ray.shutdown()

    # The public calls.
    def put(self, value):
        if isinstance(value, ObjectRef):
            raise TypeError("Calling 'put' on an ObjectRef is not allowed. If you really want "
                            "to do this, you can wrap the ObjectRef in a list and call 'put' "
                            "on it.")
        return RayRef(_call(self.ray.put, value))

    def get(self, refs, timeout, writable):
        if type(refs) is RayRef:
            v = _wrap_value(_call(self.ray.get, refs._r, timeout=timeout))
            return _writable([v], {})[0][0] if writable else v
        values = _call(self.ray.get, [_checked(r)._r for r in refs], timeout=timeout)
        values = [_wrap_value(v) for v in values]
        return _writable(values, {})[0] if writable else values

    def wait(self, refs, num_returns, timeout, fetch_local):
        inner = [_ray_side(r) for r in refs]
        ready, _ = _call(self.ray.wait, inner, num_returns=num_returns, timeout=timeout,
                         fetch_local=fetch_local)
        chosen = set(id(x) for x in ready)
        ready_out = [r for r, x in zip(refs, inner) if id(x) in chosen]
        return ready_out, [r for r, x in zip(refs, inner) if id(x) not in chosen]

    def cancel(self, ref, force, recursive):
        target = _ray_side(ref)
        _call(self.ray.cancel, target, force=force, recursive=recursive)

    def submit(self, rf, args, kwargs, options):
        """rf.remote(*args, **kwargs) on Ray, with options (nanoray's, merged)."""
        fn = self._remote_function(rf, options)
        args, kwargs = _unwrap_args(args, kwargs, task=rf.__dict__.setdefault(
            "_ray_has_self", _has_self(rf._function)))
        return _wrap_out(_call(fn.remote, *args, **kwargs))

    def _remote_function(self, rf, options):
        writable = bool(options.get("writable_args"))
        most = options.get("max_calls") or 0      # Ray takes it at decoration only
        cache = rf.__dict__.setdefault("_ray_cache", {})
        key = (id(self.ray), writable, most)
        base = cache.get(key)
        if base is None:
            with self._cache_lock:
                base = cache.get(key)
                if base is None:
                    wrapper = task_wrapper(rf._function, writable)
                    base = (self.ray.remote(max_calls=most)(wrapper) if most
                            else self.ray.remote(wrapper))
                    cache[key] = base
        ropts = ray_options(options)
        ropts.pop("max_calls", None)
        return base.options(**ropts) if ropts else base

    def create_actor(self, ac, args, kwargs, options):
        cache = ac.__dict__.setdefault("_ray_cache", {})
        groups = options.get("concurrency_groups")    # Ray takes it at decoration only
        key = (id(self.ray), tuple(sorted(groups.items())) if groups else None)
        base = cache.get(key)
        if base is None:
            with self._cache_lock:
                base = cache.get(key)
                if base is None:
                    wrapper = actor_wrapper(ac._cls)
                    base = (self.ray.remote(concurrency_groups=groups)(wrapper) if groups
                            else self.ray.remote(wrapper))
                    cache[key] = base
        ropts = ray_options(options)
        ropts.pop("concurrency_groups", None)
        cls = base.options(**ropts) if ropts else base
        args, kwargs = _unwrap_args(args, kwargs)
        return wrap_handle(_call(cls.remote, *args, **kwargs))

    def placement_group(self, bundles, strategy, name, lifetime):
        pg = wrap_pg(_call(self.ray.util.placement_group, bundles, strategy=strategy,
                           name=name, lifetime=lifetime))
        pg.name, pg.strategy = name, strategy
        return pg

    def kill(self, handle, no_restart):
        _call(self.ray.kill, handle.__dict__["_h"], no_restart=no_restart)

    def get_actor(self, name, namespace):
        return wrap_handle(_call(self.ray.get_actor, name, namespace=namespace))


def _ray_side(r):
    """The Ray object behind a ref or a generator of this backend."""
    if type(r) is RayRef:
        return r._r
    g = getattr(r, "_g", None)             # RayRefGenerator
    if g is None:
        _checked(r)
    return g


def _checked(r):
    if type(r) is not RayRef:
        if isinstance(r, ObjectRef):
            raise ValueError("this ObjectRef belongs to nanoray's local runtime, not to the "
                             "Ray backend now running (made before init(backend='ray') or "
                             "init(address=...)?)")
        raise ValueError("'object_refs' must either be an ObjectRef or a list of ObjectRefs, "
                         "found %r in the list" % (type(r).__name__,))
    return r


_attach_lock = threading.Lock()


def attach():
    """In a Ray worker: nanoray's calls go to the Ray that runs it."""
    from nanoray import _api
    if _api._backend is None:
        with _attach_lock:
            if _api._backend is None:
                _api._backend = RayBackend(import_ray(), False)
