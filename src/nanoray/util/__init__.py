"""Utilities built on nanoray's public API, under Ray's module paths
(``nanoray.util.ActorPool``, ``nanoray.util.queue.Queue``).

Importing this package starts nothing: the runtime starts at the first API
call, as it does for ``import nanoray``.  ``nanoray.util.queue`` is imported
on its own (``from nanoray.util.queue import Queue``), as in Ray.
"""

from nanoray.util.actor_pool import ActorPool
from nanoray.util.placement_group import (get_current_placement_group, get_placement_group,
                                          placement_group, placement_group_table,
                                          remove_placement_group)

__all__ = ["ActorPool", "get_current_placement_group", "get_placement_group",
           "list_named_actors", "placement_group", "placement_group_table",
           "remove_placement_group"]


def list_named_actors(all_namespaces=False):
    """Names of the live named actors in the current namespace; with
    all_namespaces, dicts of their name and namespace (as in Ray)."""
    from nanoray import _api
    from nanoray._core import _runtime
    backend = _api._get_backend()
    if backend.remote:
        return backend.ray.util.list_named_actors(all_namespaces)
    pairs = _runtime.actor_names()
    if all_namespaces:
        return [{"name": name, "namespace": ns} for ns, name in pairs]
    return [name for ns, name in pairs if ns == backend.namespace]
