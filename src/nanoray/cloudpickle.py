"""nanoray.cloudpickle: the cloudpickle nanoray serializes with, under Ray's
path (``ray.cloudpickle``), so code that imports it from there runs unchanged.

An ObjectRef pickled with it is serialized *out of band*: no payload in the
store counts it, so, as in Ray, its object is then kept alive for as long as
the process that pickled it lives (the driver: until shutdown), and the ref
can be unpickled again later in any process of the same runtime."""

import cloudpickle as _cloudpickle
from cloudpickle import (CloudPickler, Pickler, load, loads,  # noqa: F401
                         register_pickle_by_value, unregister_pickle_by_value)
from cloudpickle import DEFAULT_PROTOCOL  # noqa: F401


def _pickler():
    """Ray's cloudpickle on the Ray backend: it keeps a ref pickled out of
    band alive, as this one does on the local backend."""
    from nanoray import _api
    b = _api._backend
    return b.ray.cloudpickle if b is not None and b.remote else _cloudpickle


def dumps(obj, protocol=None, buffer_callback=None):
    return _pickler().dumps(obj, protocol=protocol, buffer_callback=buffer_callback)


def dump(obj, file, protocol=None, buffer_callback=None):
    return _pickler().dump(obj, file, protocol=protocol, buffer_callback=buffer_callback)

__all__ = ["CloudPickler", "Pickler", "dump", "dumps", "load", "loads",
           "register_pickle_by_value", "unregister_pickle_by_value", "DEFAULT_PROTOCOL"]
