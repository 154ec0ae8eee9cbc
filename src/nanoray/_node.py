"""The one node's resources as Ray reports them: what init() defines beyond
CPUs, cluster_resources(), available_resources(), nodes(), get_gpu_ids()."""

import numbers
import os

from nanoray import _api
from nanoray._core import _runtime as _rt


def _detect_gpus():
    """GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else the
    devices the NVIDIA driver lists (Ray's autodetection, without CUDA)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def _resource_totals(num_gpus, resources, memory, object_store_memory):
    """What init's arguments define beyond CPUs: {"GPU": n, "memory": bytes, ...}."""
    if num_gpus is None:
        num_gpus = _detect_gpus()
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, numbers.Real) or num_gpus < 0 \
            or num_gpus != int(num_gpus):
        raise ValueError("num_gpus must be a whole number >= 0, got %r" % (num_gpus,))
    if memory is None:
        memory = max(0, _api._physical_memory() - object_store_memory)
    if isinstance(memory, bool) or not isinstance(memory, numbers.Real) or memory < 0:
        raise ValueError("memory must be a number of bytes >= 0, got %r" % (memory,))
    totals = {"GPU": int(num_gpus), "memory": int(memory)}
    for name, amount in (resources or {}).items():
        if name in ("CPU", "GPU", "memory"):
            raise ValueError("Use the 'num_cpus', 'num_gpus' and 'memory' arguments instead "
                             "of %r in 'resources'" % (name,))
        if not isinstance(name, str) or isinstance(amount, bool) or \
                not isinstance(amount, numbers.Real) or amount < 0:
            raise ValueError("resources must map names to amounts >= 0, got %r: %r"
                             % (name, amount))
        totals[name] = amount
    return totals


def _node_ip():
    import socket
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def _node_resources(b, which):
    table = _rt.resource_table(b.region)
    out = {name: pair[which] for name, pair in table.items() if pair[0] > 0}
    out = {name: max(0.0, float(v)) for name, v in out.items()}
    s = b.region.stats()
    out["object_store_memory"] = float(s["store_capacity"] - (s["store_used"] if which else 0))
    out["node:%s" % _node_ip()] = 1.0
    out["node:__internal_head__"] = 1.0
    return out


def cluster_resources():
    """Every resource of this one node, as Ray reports a cluster's."""
    b = _api._get_backend()
    if b.remote:
        return b.ray.cluster_resources()
    return _node_resources(b, 0)


def available_resources():
    """What is free now (resources with none free are left out, as in Ray)."""
    b = _api._get_backend()
    if b.remote:
        return b.ray.available_resources()
    out = _node_resources(b, 1)
    return {k: v for k, v in out.items() if v > 0}


def nodes():
    """The one node, with Ray's fields."""
    b = _api._get_backend()
    if b.remote:
        return b.ray.nodes()
    ip = _node_ip()
    import socket
    return [{"NodeID": "%056x" % b.region.session, "Alive": True, "alive": True,
             "NodeManagerAddress": ip, "NodeManagerHostname": socket.gethostname(),
             "NodeName": ip, "Resources": cluster_resources(), "Labels": {},
             "IsHeadNode": True}]


def get_gpu_ids():
    """The GPU ids the running task or actor holds ([] in the driver)."""
    b = _api._get_backend()
    if b.remote:
        return b.ray.get_gpu_ids()
    return _rt.current_gpu_ids()
