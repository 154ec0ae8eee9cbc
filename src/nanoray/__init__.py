"""nanoray: Ray's core API on one machine, over a compiled shared-memory
scheduler and object store.  ``import nanoray as ray`` and go.

The actor API, ``nanoray.util`` and ``nanoray.experimental`` load on first
use (module __getattr__): a script that only runs tasks does not pay for
importing them."""

import importlib

from nanoray import exceptions
from nanoray._api import (available_resources, cancel, cluster_resources, get, get_gpu_ids,
                          init, is_initialized, nodes, put, shutdown, timeline, wait)
from nanoray._core._runtime import ObjectRef
from nanoray.remote_function import RemoteFunction, remote

__version__ = "0.1.0"

__all__ = [
    "ActorClass", "ActorHandle", "DynamicObjectRefGenerator", "LoggingConfig", "ObjectRef",
    "ObjectRefGenerator", "RemoteFunction", "actor", "available_resources", "cancel", "cloudpickle",
    "cluster_resources", "exceptions", "experimental", "get", "get_actor", "get_gpu_ids",
    "get_runtime_context", "init", "is_initialized", "kill", "method", "nodes", "put", "remote",
    "shutdown", "timeline", "util", "wait", "__version__",
]

# name -> (module, attribute or None for the module itself)
_LAZY = {
    "actor": ("nanoray.actor", None),
    "ActorClass": ("nanoray.actor", "ActorClass"),
    "ActorHandle": ("nanoray.actor", "ActorHandle"),
    "get_actor": ("nanoray.actor", "get_actor"),
    "kill": ("nanoray.actor", "kill"),
    "method": ("nanoray.actor", "method"),
    "get_runtime_context": ("nanoray.runtime_context", "get_runtime_context"),
    "cloudpickle": ("nanoray.cloudpickle", None),
    "ObjectRefGenerator": ("nanoray._generator", "ObjectRefGenerator"),
    "DynamicObjectRefGenerator": ("nanoray._generator", "DynamicObjectRefGenerator"),
    "util": ("nanoray.util", None),
    "runtime_env": ("nanoray.runtime_env", None),
    "job_config": ("nanoray.job_config", None),
    "LoggingConfig": ("nanoray.job_config", "LoggingConfig"),
    "experimental": ("nanoray.experimental", None),
}


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError("module 'nanoray' has no attribute %r" % (name,)) from None
    value = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
