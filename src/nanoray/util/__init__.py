"""Utilities built on nanoray's public API, under Ray's module paths
(``nanoray.util.ActorPool``, ``nanoray.util.queue.Queue``).

Importing this package starts nothing: the runtime starts at the first API
call, as it does for ``import nanoray``.  ``nanoray.util.queue`` is imported
on its own (``from nanoray.util.queue import Queue``), as in Ray.
"""

from nanoray.util.actor_pool import ActorPool
from nanoray.util.check_serialize import inspect_serializability
from nanoray.util.helpers import as_completed, map_unordered
from nanoray.util.placement_group import (get_current_placement_group, get_placement_group,
                                          placement_group, placement_group_table,
                                          remove_placement_group)
from nanoray.util.serialization import deregister_serializer, register_serializer

__all__ = ["ActorPool", "as_completed", "deregister_serializer", "get_current_placement_group",
           "get_node_ip_address", "get_placement_group", "inspect_serializability",
           "list_named_actors", "map_unordered", "placement_group", "placement_group_table",
           "register_serializer", "remove_placement_group"]


def get_node_ip_address():
    """This node's address: on the local backend the loopback address, as
    Ray reports on one machine; on the Ray backend, Ray's answer."""
    from nanoray import _api
    b = _api._backend
    if b is not None and b.remote:
        return b.ray.util.get_node_ip_address()
    return "127.0.0.1"


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
