"""What runs now, under Ray's module path (ray.util.state): list_tasks,
list_actors, list_objects, list_workers, list_nodes, list_placement_groups,
list_jobs, summarize_tasks, summarize_actors, summarize_objects, get_task,
get_actor, with Ray's field names.

Each call reads a snapshot of the shared tables (copied under the region
lock, rt/state.pyx).  A task is listed while it is pending or running: a
finished task's entry is freed at once here (its result stays, in
list_objects), where Ray keeps a history of finished tasks.  Records allow
attribute access (t.state) and item access (t["state"]), as Ray's do.

Filters are Ray's: a list of (key, predicate, value) with predicate "="
or "!=", values compared as strings.
"""

from nanoray import _api, _runtime_env
from nanoray._core import _runtime as _rt

__all__ = ["get_actor", "get_task", "list_actors", "list_jobs", "list_nodes", "list_objects",
           "list_placement_groups", "list_tasks", "list_workers", "summarize_actors",
           "summarize_objects", "summarize_tasks"]

_TASK_STATE = {1: "PENDING_ARGS_AVAIL", 2: "PENDING_NODE_ASSIGNMENT", 3: "RUNNING"}
_TASK_TYPE = {0: "NORMAL_TASK", 1: "ACTOR_CREATION_TASK", 2: "ACTOR_TASK"}
_PROC_KIND = {1: "DRIVER", 2: "WORKER", 3: "WORKER"}
_PROC_STATE = {1: "STARTING", 2: "IDLE", 3: "RUNNING", 4: "BLOCKED", 5: "EXITED"}
_OBJ_STATUS = {1: "PENDING", 2: "FINISHED", 3: "FAILED"}
# NR_ACTOR_* flags (csrc/nr_actor.h)
_CREATED, _DEAD = 1, 4


class StateRecord(dict):
    """One row: a dict whose keys are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def asdict(self):
        return dict(self)


def _ids():
    backend = _api._get_backend()
    if backend.remote:
        raise NotImplementedError(
            "nanoray.util.state reads the local backend's shared tables; on the Ray backend "
            "use ray.util.state (Ray's own, with its dashboard running)")
    session = backend.region.session
    return session, "%08x" % (session & 0xFFFFFFFF), "%056x" % session


def _func_names():
    """function export id -> its name, for the functions this process
    exported (others are loaded by id on demand)."""
    from nanoray import remote_function
    out = {}
    with remote_function._exported_lock:
        exported = list(remote_function._exported)
    for rf in exported:
        ref = rf._ref
        if ref is not None:
            out[int(ref.hex(), 16)] = getattr(rf, "__name__", "task")
    return out


def _label_names(label):
    """(name, "Class.method") of an actor call from its label: "Class.method",
    then its group after \x1f, then its .options(name=) after \x1e."""
    head, _, given = label.partition("\x1e")
    method = head.partition("\x1f")[0]
    return given or method, method


def _name_of(func_id, known, cache):
    """(the call's name, its function's or "Class.method")."""
    if func_id in known:
        return known[func_id], known[func_id]
    if func_id not in cache:
        names = ("unknown", "unknown")
        try:
            ref = _rt.ref_if_alive(func_id)
            if ref is not None:
                f = _rt.get_one(ref, 5)
                if isinstance(f, str):
                    names = _label_names(f)
                else:
                    names = (getattr(f, "__name__", None) or type(f).__name__,) * 2
        except Exception:
            pass
        cache[func_id] = names
    return cache[func_id]


def _actors():
    """slot -> (actor id, class name, flags, state, pid, restarts, cpus)."""
    from nanoray.actor import actor_id_hex
    out = {}
    for slot, pid, kind, state, _task, aflags, restarts, cpus, handle_obj, gen in _rt.proc_rows():
        if kind != 3:
            continue
        cls = "unknown"
        try:
            ref = _rt.ref_if_alive(handle_obj)
            if ref is not None:
                cls = _rt.get_one(ref, 5).get("class_name", cls)
        except Exception:
            pass
        out[slot] = (actor_id_hex(slot, gen, handle_obj), cls, aflags, state, pid, restarts,
                     cpus, gen)
    return out


def _pg_hex(session, pool):
    return "%016x%016x" % (session & ((1 << 64) - 1), pool) if pool else None


def _filtered(rows, filters, limit):
    for key, pred, value in filters or ():
        if pred not in ("=", "!="):
            raise ValueError("Unsupported filter predicate %r: use '=' or '!='" % (pred,))
        want = str(value)
        rows = [r for r in rows if (str(r.get(key)) == want) == (pred == "=")]
    return rows[:limit] if limit is not None else rows


def list_tasks(address=None, filters=None, limit=100, timeout=30, detail=False,
               raise_on_missing_output=True, _explain=False):
    """The tasks pending or running now, Ray's TaskState fields."""
    session, job, node = _ids()
    known, cache = _func_names(), {}
    actors = _actors()
    rows = []
    for (t, gen, state, kind, pid, target, attempts, cancelled, deps_left, cpus, func_id,
         parent, _ret, pool) in _rt.task_rows():
        actor = actors.get(target - 1) if target else None
        if kind == 0 or (kind == 2 and func_id):   # a function, or "Class.method"
            name, func_name = _name_of(func_id, known, cache)
        else:
            name = func_name = "%s.__init__" % actor[1] if kind == 1 and actor else \
                (actor[1] if actor else "actor task")
        st = _TASK_STATE.get(state, "PENDING_NODE_ASSIGNMENT")
        if state == 1 and not deps_left:
            st = "PENDING_NODE_ASSIGNMENT"
        rows.append(StateRecord(
            task_id="%016x" % ((gen << 32) | t), attempt_number=max(attempts - 1, 0),
            name=name, func_or_class_name=func_name if kind != 1 else (actor[1] if actor else name),
            state=st, job_id=job, actor_id=actor[0] if actor else None,
            type=_TASK_TYPE.get(kind, "NORMAL_TASK"), node_id=node,
            parent_task_id="%016x" % parent if parent else None,
            worker_id="%016x" % pid if pid > 0 else None, worker_pid=pid if pid > 0 else None,
            required_resources={"CPU": cpus / 1000.0} if cpus else {},
            placement_group_id=_pg_hex(session, pool), is_cancelled=bool(cancelled),
            language="PYTHON"))
    return _filtered(rows, filters, limit)


def get_task(id, address=None, timeout=30, _explain=False):
    """The task with this id (hex) while it is pending or running, else None."""
    found = list_tasks(filters=[("task_id", "=", id)], limit=None)
    return found[0] if found else None


def list_actors(address=None, filters=None, limit=100, timeout=30, detail=False,
                raise_on_missing_output=True, _explain=False):
    """The actors that exist now, Ray's ActorState fields."""
    session, job, node = _ids()
    names = {slot: (name, ns) for ns, name, slot in _rt.actor_names(with_slots=True)}
    rows = []
    for slot, (aid, cls, aflags, pstate, pid, restarts, cpus, _gen) in _actors().items():
        if aflags & _DEAD:
            state = "DEAD"
        elif aflags & _CREATED and pstate not in (1, 5):
            state = "ALIVE"
        elif restarts:
            state = "RESTARTING"
        else:
            state = "PENDING_CREATION"
        name, ns = names.get(slot, ("", _api._get_backend().namespace))
        rows.append(StateRecord(
            actor_id=aid, class_name=cls, state=state, job_id=job, name=name,
            ray_namespace=ns, node_id=node, pid=pid if pid > 0 else None,
            num_restarts=restarts, required_resources={"CPU": cpus / 1000.0} if cpus else {},
            placement_group_id=None))
    return _filtered(rows, filters, limit)


def get_actor(id, address=None, timeout=30, _explain=False):
    found = list_actors(filters=[("actor_id", "=", id)], limit=None)
    return found[0] if found else None


def list_objects(address=None, filters=None, limit=100, timeout=30, detail=False,
                 raise_on_missing_output=True, _explain=False):
    """The objects in the store now (and those still to be sealed), Ray's
    ObjectState fields, with the reference count and whether it is spilled."""
    session, job, node = _ids()
    rows = []
    everything = limit is None or filters
    for oid, state, size, refs, pins, spill, _task in _rt.object_rows(
            limit=(1 << 31) - 1 if everything else max(limit, 1)):
        rows.append(StateRecord(
            object_id="%016x" % oid, object_size=size, task_status=_OBJ_STATUS.get(state, "NIL"),
            reference_type="LOCAL_REFERENCE", reference_count=refs, pinned=pins > 0,
            spilled=spill == 2, node_id=node, ip="127.0.0.1", type="WORKER",
            call_site="disabled"))
    return _filtered(rows, filters, limit)


def list_workers(address=None, filters=None, limit=100, timeout=30, detail=False,
                 raise_on_missing_output=True, _explain=False):
    """The driver and worker processes, Ray's WorkerState fields."""
    session, job, node = _ids()
    rows = []
    for slot, pid, kind, state, task, aflags, restarts, cpus, handle_obj, gen in \
            _rt.proc_rows():
        if kind not in _PROC_KIND:
            continue
        rows.append(StateRecord(
            worker_id="%016x" % pid if pid > 0 else None, is_alive=state not in (5,) and pid > 0,
            worker_type=_PROC_KIND[kind], node_id=node, ip="127.0.0.1",
            pid=pid if pid > 0 else None, job_id=job, state=_PROC_STATE.get(state, "IDLE"),
            is_actor=kind == 3, exit_type=None))
    return _filtered(rows, filters, limit)


def list_nodes(address=None, filters=None, limit=100, timeout=30, detail=False,
               raise_on_missing_output=True, _explain=False):
    """This one node, Ray's NodeState fields."""
    import nanoray
    n = nanoray.nodes()[0]
    rows = [StateRecord(node_id=n["NodeID"], node_ip=n["NodeManagerAddress"],
                        is_head_node=True, state="ALIVE", node_name=n["NodeName"],
                        resources_total=dict(n["Resources"]))]
    return _filtered(rows, filters, limit)


def list_jobs(address=None, filters=None, limit=100, timeout=30, detail=False,
              raise_on_missing_output=True, _explain=False):
    """The one job, this runtime's driver, Ray's JobState fields."""
    import os
    _, job, _ = _ids()
    rows = [StateRecord(job_id=job, submission_id=None, type="DRIVER", status="RUNNING",
                        entrypoint="", driver_info={"pid": str(os.getpid())},
                        runtime_env=dict(_runtime_env.job or {}), metadata={})]
    return _filtered(rows, filters, limit)


def list_placement_groups(address=None, filters=None, limit=100, timeout=30, detail=False,
                          raise_on_missing_output=True, _explain=False):
    """The placement groups this process made, Ray's PlacementGroupState fields."""
    from nanoray.util.placement_group import placement_group_table
    rows = [StateRecord(placement_group_id=pid, name=t["name"], state=t["state"],
                        bundles=list(t["bundles"].values()), strategy=t["strategy"])
            for pid, t in placement_group_table().items()]
    return _filtered(rows, filters, limit)


def summarize_tasks(address=None, timeout=30, raise_on_missing_output=True, _explain=False):
    """Task counts by function and state, in Ray's summary layout."""
    summary = {}
    tasks = list_tasks(limit=None)
    for t in tasks:
        key = t.func_or_class_name
        entry = summary.setdefault(key, {"func_or_class_name": key, "type": t.type,
                                         "state_counts": {}})
        entry["state_counts"][t.state] = entry["state_counts"].get(t.state, 0) + 1
    return {"cluster": {"summary": summary, "total_tasks": len(tasks),
                        "total_actor_tasks": sum(t.type == "ACTOR_TASK" for t in tasks),
                        "total_actor_scheduled": sum(t.type == "ACTOR_CREATION_TASK"
                                                     for t in tasks),
                        "summary_by": "func_name"}}


def summarize_actors(address=None, timeout=30, raise_on_missing_output=True, _explain=False):
    """Actor counts by class and state, in Ray's summary layout."""
    summary = {}
    actors = list_actors(limit=None)
    for a in actors:
        entry = summary.setdefault(a.class_name, {"class_name": a.class_name,
                                                  "state_counts": {}})
        entry["state_counts"][a.state] = entry["state_counts"].get(a.state, 0) + 1
    return {"cluster": {"summary": summary, "total_actors": len(actors), "summary_by": "class"}}


def summarize_objects(address=None, timeout=30, raise_on_missing_output=True, _explain=False):
    """Object counts and sizes, in Ray's summary layout (by call site,
    which is not recorded: one entry, "disabled", as Ray's default)."""
    objects = list_objects(limit=None)
    size_mb = sum(o.object_size for o in objects) / (1024 * 1024)
    states, refs = {}, {}
    for o in objects:
        states[o.task_status] = states.get(o.task_status, 0) + 1
        refs[o.reference_type] = refs.get(o.reference_type, 0) + 1
    entry = {"total_objects": len(objects), "total_size_mb": size_mb, "total_num_workers": 1,
             "total_num_nodes": 1, "task_state_counts": states, "ref_type_counts": refs}
    return {"cluster": {"summary": {"disabled": entry} if objects else {},
                        "total_objects": len(objects), "total_size_mb": size_mb,
                        "callsite_enabled": False, "summary_by": "callsite"}}
