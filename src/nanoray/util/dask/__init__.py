"""A Dask scheduler on nanoray, as Ray's ray.util.dask:

    import dask
    from nanoray.util.dask import ray_dask_get
    x.compute(scheduler=ray_dask_get)     # or dask.config.set(scheduler=ray_dask_get)

Every task of the graph runs as a nanoray task, submitted at once in
dependency order: each takes its inputs as refs, so the scheduler starts it
the moment they are sealed, and arrays pass between tasks through the
shared store without copies.  An intermediate result is freed once the
tasks that take it have run.  Results come back read-only when they are
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
    wanted = _flatten(keys)
    order = _order(graph, wanted)
    try:                                  # Dask's own priorities, if they are topological
        from dask.order import order as dask_order
        priority = dask_order(graph)
        by_priority = sorted(order, key=lambda k: priority.get(k, 0))
        seen = set()
        for k in by_priority:
            if not graph[k].dependencies <= seen:
                raise ValueError("not topological")
            seen.add(k)
        order = by_priority
    except Exception:
        pass
    # How many tasks still to submit take each key: at zero, its ref goes
    # (the tasks given it hold it until they run), as Dask frees data once
    # its dependents are done.
    users = {}
    for key in order:
        for d in graph[key].dependencies:
            users[d] = users.get(d, 0) + 1
    keep = set(wanted)
    refs = {}
    window = 2 * max(1, int(nanoray.cluster_resources().get("CPU", 1)))
    running = []
    for key in order:
        node = graph[key]
        deps = list(node.dependencies)
        if isinstance(node, DataNode):
            refs[key] = nanoray.put(node({}))
        else:
            # At most `window` tasks submitted and not done, in Dask's order
            # (depth first): a chain is finished and its data freed before
            # many others start, as with Dask's own schedulers.
            while len(running) >= window:
                _, running = nanoray.wait(running, num_returns=1)
            refs[key] = _remote_run.remote(node, deps, *[refs[d] for d in deps])
            running.append(refs[key])
        for d in deps:
            users[d] -= 1
            if not users[d] and d not in keep:
                del refs[d]
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
