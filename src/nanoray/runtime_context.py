"""get_runtime_context(): where the calling code runs (driver, task, actor)."""

from nanoray import _api
from nanoray._core import _runtime as _rt

__all__ = ["RuntimeContext", "get_runtime_context"]


class RuntimeContext:
    """Ray's RuntimeContext, for one machine."""

    def get_job_id(self):
        _api._get_backend()
        return "%08x" % (_rt.current_region().session & 0xFFFFFFFF)

    def get_node_id(self):
        _api._get_backend()
        return "%056x" % _rt.current_region().session

    def get_worker_id(self):
        import os
        return "%016x" % os.getpid()

    def get_task_id(self):
        """The running task's id (hex), None in the driver."""
        t = _rt.current_task()
        return None if t is None else "%016x" % t

    def get_assigned_resources(self):
        """The resources the running task or actor was granted ({} in the driver)."""
        _api._get_backend()
        return _rt.current_resources()

    def get_accelerator_ids(self):
        """{"GPU": [ids as str]} for the GPUs the running task or actor holds."""
        _api._get_backend()
        return {"GPU": [str(d) for d in _rt.current_gpu_ids()]}

    def get_placement_group_id(self):
        """The id (hex) of the placement group the running task or actor
        was scheduled in, None if none."""
        from nanoray import _runtime_env
        cur = _runtime_env.current_pg
        return cur[0].id.hex() if cur is not None else None

    def get_task_name(self):
        """The name of the task or actor call running here: the function's
        name ("f"), or "Cls.method" in an actor; None in the driver."""
        call = _rt.current_call()
        return None if call is None else call[0]

    def get_task_function_name(self):
        """The running task's or actor call's function with its module
        ("module.f", "module.Cls.method"); None in the driver."""
        call = _rt.current_call()
        if call is None:
            return None
        fn = getattr(call[1], "__func__", call[1])        # a bound method's function
        module = getattr(fn, "__module__", None)
        # The function's own name, whatever .options(name=) called the call.
        name = getattr(fn, "__qualname__", None) or call[0]
        return name if not module else "%s.%s" % (module, name)

    def get_actor_name(self):
        """The name the actor running here was registered under ("" if it
        has none); None outside actors."""
        me = _rt.current_actor_slot()
        if me is None:
            return None
        for _ns, name, slot in _rt.actor_names(True):
            if slot == me[0]:
                return name
        return ""

    @property
    def runtime_env(self):
        """The runtime_env the code here runs with (a dict; {} if none):
        the one given to init(), with the task's or actor's over it."""
        from nanoray import _runtime_env
        _api._get_backend()
        return dict(_runtime_env.merge(_runtime_env.job, _runtime_env.current) or {})

    def get_runtime_env_string(self):
        """runtime_env as a JSON string."""
        import json
        return json.dumps(self.runtime_env, sort_keys=True, default=str)

    def get_resource_ids(self):
        """{"CPU": [], "GPU": [ids as str]}: the devices the running task or
        actor holds (CPUs are counted, not pinned, here)."""
        _api._get_backend()
        return {"CPU": [], "GPU": [str(d) for d in _rt.current_gpu_ids()]}

    def get_node_labels(self):
        """The node's labels: this machine has Ray's default one."""
        return {"ray.io/node-id": self.get_node_id()}

    def get_session_name(self):
        """A name for this runtime (one per init())."""
        _api._get_backend()
        return "session_nanoray_%016x" % _rt.current_region().session

    def get_temp_dir(self):
        """The temporary directory (where spilled objects go by default)."""
        import tempfile
        return tempfile.gettempdir()

    @property
    def current_placement_group_id(self):
        return self.get_placement_group_id()

    @property
    def should_capture_child_tasks_in_placement_group(self):
        """Whether tasks submitted here join the placement group this runs
        in (placement_group_capture_child_tasks=True)."""
        from nanoray import _runtime_env
        cur = _runtime_env.current_pg          # (group, capture child tasks)
        return bool(cur is not None and cur[1])

    def is_canceled(self):
        """True when nanoray.cancel() was called on the task running here."""
        return _rt.task_cancel_requested()

    def get_actor_id(self):
        """The id (hex) of the actor this runs in, None outside actors (also
        while its last queued calls run after its last handle is gone)."""
        from nanoray.actor import actor_id_hex
        me = _rt.current_actor_slot()
        return None if me is None else actor_id_hex(*me)

    @property
    def current_actor(self):
        """A handle to the actor this runs in, None outside actors.  It is
        weak, as in Ray: kept by the actor itself, it does not keep the actor
        alive (a copy passed to a task or another actor is a real handle)."""
        me = _rt.current_actor_slot()
        if me is None:
            return None
        from nanoray.actor import ActorHandle, _WeakRef
        ref = _rt.ref_if_alive(me[2])
        if ref is None:
            return None
        return ActorHandle(_WeakRef(me[2]), me[0], me[1], _rt.get_one(ref, None))

    @property
    def was_current_actor_reconstructed(self):
        """True in an actor process that is a restart of the actor."""
        me = _rt.current_actor_slot()
        if me is None:
            return False
        info = _rt.actor_info(me[0], me[1])
        return info is not None and info[2] > 0

    @property
    def namespace(self):
        return _api._get_backend().namespace

    # Ray's older names: IDs (hex strs with .hex()), as Ray's are.
    job_id = property(lambda self: _hex_id(self.get_job_id()))
    node_id = property(lambda self: _hex_id(self.get_node_id()))
    task_id = property(lambda self: _hex_id(self.get_task_id()))
    actor_id = property(lambda self: _hex_id(self.get_actor_id()))

    def get(self):
        return {"job_id": self.get_job_id(), "node_id": self.get_node_id(),
                "worker_id": self.get_worker_id(),
                "namespace": self.namespace, "task_id": self.get_task_id(),
                "actor_id": self.get_actor_id()}


class RayRuntimeContext:
    """On the Ray backend: Ray's runtime context, with current_actor as a
    nanoray handle."""

    def __init__(self, ctx):
        self._ctx = ctx

    @property
    def current_actor(self):
        from nanoray._ray_backend import wrap_handle
        return wrap_handle(self._ctx.current_actor)

    def __getattr__(self, name):
        return getattr(self._ctx, name)


def _hex_id(value):
    return None if value is None else _rt.HexId(value)


def get_runtime_context():
    b = _api._get_backend()
    if b.remote:
        return RayRuntimeContext(b.ray.get_runtime_context())     # Ray's, nanoray's handle
    return RuntimeContext()
