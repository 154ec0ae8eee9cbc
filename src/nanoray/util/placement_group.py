"""Placement groups, under Ray's module path (ray.util.placement_group).

A placement group reserves resources on this machine for the tasks and
actors scheduled in it (csrc/nr_pg.c): they are charged to the group, and
everything else to what the machine has left.  A group the machine has no
room for yet is pending, and is placed as soon as resources come back;
pg.ready() is a ref that resolves then.  Each bundle is a reservation of
its own: a task or actor is charged to the bundle its bundle index names,
or with none (-1) to the first bundle it fits then, and waits while that
has no room, as in Ray.  A call that fits no bundle it may use raises
ValueError at .remote(), as in Ray.  STRICT_SPREAD with more than one
bundle needs more than one node: such a group stays pending, as in Ray.
At most 256 bundles are reserved at once, over all groups; a group with
more bundles than there are free slots shares one reservation among them,
with a warning (its bundle indexes then do not narrow what a call may use).

remove_placement_group() gives the unused reservation back at once, fails
the group's tasks that have not started (and any submitted to it later)
with TaskPlacementGroupRemoved, and kills the actors this process created
in it (not yet those that tasks created in it); tasks already running
finish, and give what they hold back to the machine.

An actor scheduled in a group that is still pending is made once the group
is placed: its .remote() waits for that (Ray returns at once and creates it
later).  An actor scheduled in a removed group raises
ActorUnschedulableError.
"""

import numbers
import threading
import warnings

from nanoray.actor import HexID

__all__ = ["PlacementGroup", "get_current_placement_group", "get_placement_group",
           "placement_group", "placement_group_table", "remove_placement_group"]

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")

# Groups made by this process (their names and specs are known here only).
_registry = {}
_lock = threading.Lock()


class PlacementGroupID(HexID):
    __slots__ = ()


class PlacementGroup:
    """A handle to a placement group: ready(), wait(), its id and bundles."""

    def __init__(self, pool, bundles, strategy="PACK", name="", session=0, bundle_pools=None):
        self._pool = pool
        self._bundle_pools = bundle_pools     # each bundle's pool (None: they share one)
        self._session = session
        self.bundle_specs = [dict(b) for b in bundles]
        self.strategy = strategy
        self.name = name
        self.id = PlacementGroupID("%016x%016x" % (session & ((1 << 64) - 1), pool))
        self._actors = []                    # (slot, gen) made here in it, for remove
        self._fits = {}                      # (index, demand) -> fits a bundle

    def _pool_for(self, index):
        """The pool a call with this bundle index is charged to (-1: any)."""
        from nanoray._core import _runtime as _rt
        if index is None or index < 0 or not self._bundle_pools:
            return self._pool | _rt.POOL_ANY
        return self._bundle_pools[index]

    @property
    def bundle_count(self):
        return len(self.bundle_specs)

    @property
    def is_empty(self):
        return False

    def ready(self):
        """A ref that resolves (to this group) once its resources are reserved."""
        from nanoray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        return _ready.options(scheduling_strategy=PlacementGroupSchedulingStrategy(self)) \
            .remote(self)

    def wait(self, timeout_seconds=30):
        """True once the group is reserved, False if timeout_seconds pass first."""
        from nanoray import _api
        ready, _ = _api.wait([self.ready()], timeout=timeout_seconds)
        return bool(ready)

    def __reduce__(self):
        return (PlacementGroup, (self._pool, self.bundle_specs, self.strategy, self.name,
                                 self._session, self._bundle_pools))

    def __eq__(self, other):
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return "PlacementGroup(id=%s, bundles=%s)" % (self.id.hex(), self.bundle_specs)


def _ready_function():
    from nanoray.remote_function import remote

    def ready(pg):
        return pg
    return remote(num_cpus=0, max_retries=0)(ready)


class _LazyReady:
    """The remote function behind ready(), made on first use."""
    _f = None

    def options(self, **kw):
        if _LazyReady._f is None:
            _LazyReady._f = _ready_function()
        return _LazyReady._f.options(**kw)


_ready = _LazyReady()


def check_fits(pg, index, cpus_milli, demand, what):
    """Ray's check at .remote(): a task or actor in a group must fit into one
    bundle, the one `index` names (-1: any)."""
    need = {"CPU": cpus_milli / 1000.0}
    need.update(demand or {})
    need = {k: v for k, v in need.items() if v}
    key = (index, tuple(sorted(need.items())))
    ok = pg._fits.get(key)
    bundles = pg.bundle_specs if index < 0 else [pg.bundle_specs[index]]
    if ok is None:
        ok = any(all(b.get(k, 0) >= v - 1e-9 for k, v in need.items()) for b in bundles)
        pg._fits[key] = ok
    if not ok:
        raise ValueError(
            "Cannot schedule %s with the placement group because the resource request %s "
            "cannot fit into %s for the placement group, %s." % (
                what, need, "any bundles" if index < 0 else "bundle %d" % index, bundles))


def _demand(bundle):
    """(milli-CPUs, resource vector or None, names the machine lacks) of a
    bundle."""
    from nanoray._core import _runtime as _rt
    rest = {k: v for k, v in bundle.items() if k != "CPU" and v}
    vec, missing = _rt.demand(rest)
    return int(round(bundle.get("CPU", 0) * 1000)), vec, missing


def _total(bundles):
    total = {}
    for b in bundles:
        for k, v in b.items():
            total[k] = total.get(k, 0) + v
    return total


def _check_bundles(bundles):
    if not isinstance(bundles, (list, tuple)) or not bundles:
        raise ValueError("The placement group `bundles` argument cannot contain an empty list")
    for b in bundles:
        if not isinstance(b, dict) or not b:
            raise ValueError("Bundles cannot be an empty dictionary or resources with only 0 "
                             "values. Bundles: %r" % (bundles,))
        for k, v in b.items():
            if not isinstance(k, str) or isinstance(v, bool) or \
                    not isinstance(v, numbers.Real) or v < 0:
                raise ValueError("bundle resources must map names to amounts >= 0, got %r"
                                 % (b,))
        if not any(b.values()):
            raise ValueError("Bundles cannot be an empty dictionary or resources with only 0 "
                             "values. Bundles: %r" % (bundles,))


def placement_group(bundles, strategy="PACK", name="", lifetime=None, _soft_target_node_id=None,
                    bundle_label_selector=None, **kwargs):
    """Reserves the bundles' resources on this machine (now, or once they are
    free); returns its PlacementGroup at once."""
    from nanoray import _api
    from nanoray._core import _runtime as _rt
    _check_bundles(bundles)
    if strategy not in STRATEGIES:
        raise ValueError("Invalid placement group strategy %r. Supported strategies are: %s."
                         % (strategy, ", ".join(STRATEGIES)))
    if lifetime not in (None, "detached"):
        raise ValueError("Placement group `lifetime` argument must be either `None` or "
                         "'detached'. Got %r." % (lifetime,))
    if not isinstance(name, str):
        raise TypeError("placement group name must be a str, got %r" % (type(name).__name__,))
    b = _api._get_backend()
    if b.remote:
        return b.placement_group(bundles, strategy, name, lifetime)
    _set_gone_error(b)
    each = [_demand(x) for x in bundles]
    table = _rt.resource_table()
    never = any(m for _, _, m in each) or \
        sum(c for c, _, _ in each) > table["CPU"][0] * 1000 or \
        (strategy == "STRICT_SPREAD" and len(bundles) > 1)
    if never:
        warnings.warn(
            "The placement group %s can never be placed on this machine (%s): it stays "
            "pending." % (name or bundles, "it needs one node per bundle" if strategy ==
                          "STRICT_SPREAD" and len(bundles) > 1 else
                          "it needs more than the machine has"), RuntimeWarning, stacklevel=2)
        each[0] = (1 << 30,) + each[0][1:]   # pending for good
    pool, bundle_pools = _rt.pg_create([c for c, _, _ in each], [v for _, v, _ in each])
    if not pool and len(bundles) > 1:
        # Fewer free slots than bundles: one reservation for all of them.
        cpus, vec, _ = _demand(_total(bundles))
        pool, _ = _rt.pg_create([1 << 30 if never else cpus], [vec])
        if pool:
            warnings.warn(
                "The placement group %s has %d bundles, more than nanoray has room for now "
                "(it reserves at most %d bundles at once, over all groups): its bundles share "
                "one reservation (a bundle index does not narrow what a call may use)."
                % (name or bundles, len(bundles), _rt.MAX_PLACEMENT_GROUPS),
                RuntimeWarning, stacklevel=2)
    if not pool:
        raise RuntimeError("nanoray reserves at most %d placement-group bundles at once; remove "
                           "some groups with remove_placement_group()"
                           % _rt.MAX_PLACEMENT_GROUPS)
    pg = PlacementGroup(pool, bundles, strategy, name, b.region.session, bundle_pools)
    pg._never = bool(never)
    with _lock:
        _registry[pool] = pg
    return pg


def _set_gone_error(backend):
    """Once per runtime, before its first group: the error the tasks of a
    removed group fail with (the C layer copies it into their returns)."""
    from nanoray import exceptions
    from nanoray._core import _runtime as _rt
    with _lock:
        if getattr(backend, "pg_gone_error_set", False):
            return
        _rt.pg_set_gone_error(backend.region, exceptions.TaskPlacementGroupRemoved(
            "The placement group this task was scheduled in was removed before it started."))
        backend.pg_gone_error_set = True


def remove_placement_group(placement_group):
    """Releases the group: see the module's description."""
    from nanoray import _api, exceptions
    from nanoray._core import _runtime as _rt
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError("remove_placement_group() expects a PlacementGroup, got %r"
                        % (type(placement_group).__name__,))
    b = _api._get_backend()
    if b.remote:
        return b.ray.util.remove_placement_group(placement_group._pg)
    pool = _pool_of(placement_group)
    if pool is None:
        return
    _rt.pg_remove(pool)                      # tasks submitted from now on fail in C
    keys = _rt.pg_tasks(pool)
    with _lock:
        if _registry.get(pool) is placement_group:
            _registry[pool] = _Removed(placement_group)
    if keys:
        _rt.fail_unstarted(keys, exceptions.TaskPlacementGroupRemoved(
            "The placement group %s was removed before this task started."
            % placement_group.id.hex()))
    for slot, gen in placement_group._actors:
        try:
            _rt.actor_kill(slot, gen, True)
        except Exception:
            pass
    placement_group._actors = []


class _Removed:
    """A removed group, kept for placement_group_table()."""

    def __init__(self, pg):
        self.pg = pg


def get_placement_group(placement_group_name):
    """The live group of that name made by this process (ValueError if none)."""
    from nanoray import _api
    b = _api._backend
    if b is not None and b.remote:
        from nanoray._ray_backend import _call, wrap_pg
        return wrap_pg(_call(b.ray.util.get_placement_group, placement_group_name))
    with _lock:
        for pg in _registry.values():
            if isinstance(pg, PlacementGroup) and pg.name == placement_group_name and pg.name:
                return pg
    raise ValueError("Failed to look up placement group with name: %s"
                     % (placement_group_name,))


_STATES = {0: "REMOVED", 1: "PENDING", 2: "CREATED"}


def placement_group_table(placement_group=None):
    """Ray's table of the groups made by this process (or of one group)."""
    from nanoray import _api
    from nanoray._core import _runtime as _rt
    b = _api._get_backend()
    if b.remote:
        return b.ray.util.placement_group_table(getattr(placement_group, "_pg", None))
    with _lock:
        groups = [g.pg if isinstance(g, _Removed) else g for g in _registry.values()] \
            if placement_group is None else [placement_group]

    def row(pg):
        st = -1 if pg._session != b.region.session else _rt.pg_state(pg._pool)
        return {"placement_group_id": pg.id.hex(), "name": pg.name,
                "bundles": {i: dict(x) for i, x in enumerate(pg.bundle_specs)},
                "bundles_to_node_id": {i: "%056x" % b.region.session
                                       for i in range(pg.bundle_count)},
                "strategy": pg.strategy, "state": _STATES.get(st, "REMOVED"),
                "stats": {"scheduling_state": _STATES.get(st, "REMOVED")}}
    if placement_group is not None:
        return row(placement_group)
    return {pg.id.hex(): row(pg) for pg in groups}


def get_current_placement_group():
    """The group the running task or actor was scheduled in, None if none."""
    from nanoray import _api, _runtime_env
    b = _api._backend
    if b is not None and b.remote:
        from nanoray._ray_backend import wrap_pg
        return wrap_pg(b.ray.util.get_current_placement_group())
    return _runtime_env.current_pg[0] if _runtime_env.current_pg else None


def _pool_of(pg, index=None):
    """The group's pool in the running runtime (with a bundle index, -1 for
    any: the pool a call is charged to), None if it belongs to another (a
    runtime that was shut down)."""
    from nanoray._core import _runtime as _rt
    region = _rt.current_region()
    if region is None or pg._session != region.session:
        return None
    return pg._pool if index is None else pg._pool_for(index)
