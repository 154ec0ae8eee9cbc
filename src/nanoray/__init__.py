"""nanoray: Ray's core API on one machine, over a compiled shared-memory
scheduler and object store.  ``import nanoray as ray`` and go."""

from nanoray import exceptions
from nanoray._api import (available_resources, cluster_resources, get, init, is_initialized,
                          put, shutdown, timeline, wait)
from nanoray._core._runtime import ObjectRef
from nanoray.remote_function import RemoteFunction, remote
from nanoray import actor
from nanoray.actor import ActorClass, ActorHandle, get_actor, kill, method
from nanoray.runtime_context import get_runtime_context
from nanoray import util  # noqa: E402 (Ray's users reach ray.util.ActorPool this way)

__version__ = "0.1.0"

__all__ = [
    "ActorClass", "ActorHandle", "ObjectRef", "RemoteFunction", "actor", "available_resources",
    "cluster_resources", "exceptions", "get", "get_actor", "get_runtime_context", "init",
    "is_initialized", "kill", "method", "put", "remote", "shutdown", "timeline", "util", "wait",
    "__version__",
]
