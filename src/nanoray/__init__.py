"""nanoray: Ray's core API on one machine, over a compiled shared-memory
scheduler and object store.  ``import nanoray as ray`` and go."""

from nanoray import exceptions
from nanoray._api import (available_resources, cluster_resources, get, init, is_initialized,
                          put, shutdown, timeline, wait)
from nanoray._core._runtime import ObjectRef
from nanoray.remote_function import RemoteFunction, remote

__version__ = "0.1.0"

__all__ = [
    "ObjectRef", "RemoteFunction", "available_resources", "cluster_resources", "exceptions",
    "get", "init", "is_initialized", "put", "remote", "shutdown", "timeline", "wait",
    "__version__",
]
