"""nanoray.cloudpickle: the cloudpickle nanoray serializes with, under Ray's
path (``ray.cloudpickle``), so code that imports it from there runs unchanged.

An ObjectRef pickled with it is serialized *out of band*: no payload in the
store counts it, so, as in Ray, its object is then kept alive for as long as
the process that pickled it lives (the driver: until shutdown), and the ref
can be unpickled again later in any process of the same runtime."""

import cloudpickle as _cloudpickle
import sys

from cloudpickle import CloudPickler, Pickler, load, loads  # noqa: F401
from cloudpickle import DEFAULT_PROTOCOL  # noqa: F401


def _pickler():
    """Ray's cloudpickle on the Ray backend: it keeps a ref pickled out of
    band alive, as this one does on the local backend."""
    from nanoray import _api
    b = _api._backend
    return b.ray.cloudpickle if b is not None and b.remote else _cloudpickle


_by_value = set()          # module names registered here


def _ray_pickle():
    return sys.modules.get("ray.cloudpickle")


def register_pickle_by_value(module):
    """Pickle the module's functions and classes by value, on both backends
    (Ray has its own copy of cloudpickle, which is told too)."""
    _cloudpickle.register_pickle_by_value(module)
    _by_value.add(module.__name__)
    theirs = _ray_pickle()
    if theirs is not None:
        theirs.register_pickle_by_value(module)


def unregister_pickle_by_value(module):
    _cloudpickle.unregister_pickle_by_value(module)
    _by_value.discard(module.__name__)
    theirs = _ray_pickle()
    if theirs is not None and module.__name__ in getattr(
            theirs.cloudpickle, "_PICKLE_BY_VALUE_MODULES", ()):
        theirs.unregister_pickle_by_value(module)


def sync_to_ray():
    """When the Ray backend starts: what was registered before it."""
    theirs = _ray_pickle()
    for name in list(_by_value):
        if theirs is not None and name in sys.modules:
            theirs.register_pickle_by_value(sys.modules[name])


def dumps(obj, protocol=None, buffer_callback=None):
    return _pickler().dumps(obj, protocol=protocol, buffer_callback=buffer_callback)


def dump(obj, file, protocol=None, buffer_callback=None):
    return _pickler().dump(obj, file, protocol=protocol, buffer_callback=buffer_callback)

__all__ = ["CloudPickler", "Pickler", "dump", "dumps", "load", "loads",
           "register_pickle_by_value", "unregister_pickle_by_value", "DEFAULT_PROTOCOL"]
