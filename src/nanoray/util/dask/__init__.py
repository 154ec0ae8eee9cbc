"""A Dask scheduler on nanoray, as Ray's ray.util.dask:

    import dask
    from nanoray.util.dask import ray_dask_get
    x.compute(scheduler=ray_dask_get)     # or dask.config.set(scheduler=ray_dask_get)

Every task of the graph runs as a nanoray task, submitted at once in
dependency order: each takes its inputs as refs, so the scheduler starts it
the moment they are sealed, and arrays pass between tasks through the
shared store without copies.  Results come back read-only when they are
numpy arrays, as from nanoray.get.  Dask is optional: this module imports
it only when a graph is run.
"""

import nanoray

__all__ = ["disable_dask_on_ray", "enable_dask_on_ray", "ray_dask_get"]


def _run_node(node, dep_keys, *dep_values):
    return node(dict(zip(dep_keys, dep_values)))


_remote_run = None


def ray_dask_get(dsk, keys, **kwargs):
    """Dask's scheduler interface: computes `keys` (a key or nested lists of
    keys) of graph `dsk`; returns the values in the same structure.  Ray's
    extra keywords (ray_callbacks, ray_persist, ...) are accepted and have
    no effect."""
    global _remote_run
    try:
        from dask._task_spec import DataNode, convert_legacy_graph
    except ImportError:
        raise ImportError("nanoray.util.dask needs dask >= 2024.12: pip install dask") from None
    if _remote_run is None:
        _remote_run = nanoray.remote(_run_node)
    from collections.abc import Mapping
    if not isinstance(dsk, Mapping):               # newer dask passes an expression
        dsk = dsk.__dask_graph__()
    graph = convert_legacy_graph(dsk)
    refs = {}
    for key in _order(graph, _flatten(keys)):
        node = graph[key]
        deps = list(node.dependencies)
        if isinstance(node, DataNode):
            refs[key] = nanoray.put(node({}))
        else:
            refs[key] = _remote_run.remote(node, deps, *[refs[d] for d in deps])
    return _gather(keys, refs)


def _flatten(keys):
    out, stack = [], [keys]
    while stack:
        k = stack.pop()
        if isinstance(k, list):
            stack.extend(k)
        else:
            out.append(k)
    return out


def _order(graph, wanted):
    """The keys `wanted` needs, each after its dependencies."""
    done, order = set(), []
    for root in wanted:
        if root in done:
            continue
        stack = [(root, False)]
        while stack:
            key, expanded = stack.pop()
            if key in done:
                continue
            if expanded:
                done.add(key)
                order.append(key)
                continue
            if key not in graph:
                raise KeyError("the graph has no key %r" % (key,))
            stack.append((key, True))
            stack.extend((d, False) for d in graph[key].dependencies if d not in done)
    return order


def _gather(keys, refs):
    flat = _flatten(keys)
    values = dict(zip(flat, nanoray.get([refs[k] for k in flat])))

    def build(k):
        return [build(x) for x in k] if isinstance(k, list) else values[k]
    return build(keys)


def enable_dask_on_ray(shuffle="tasks", use_shuffle_optimization=True):
    """Makes ray_dask_get Dask's default scheduler; returns dask's config
    context, so it can be used in a with block.  (Ray's shuffle options are
    accepted; Dask's own shuffle settings stay as they are.)"""
    import dask
    return dask.config.set(scheduler=ray_dask_get)


def disable_dask_on_ray():
    """Gives Dask its default scheduler back."""
    import dask
    return dask.config.set(scheduler=None)
