"""nanoray.cloudpickle: the cloudpickle nanoray serializes with, under Ray's
path (``ray.cloudpickle``), so code that imports it from there runs unchanged.

An ObjectRef pickled with it is serialized *out of band*: no payload in the
store counts it, so, as in Ray, its object is then kept alive for as long as
the process that pickled it lives (the driver: until shutdown), and the ref
can be unpickled again later in any process of the same runtime."""

from cloudpickle import (CloudPickler, Pickler, dump, dumps, load, loads,  # noqa: F401
                         register_pickle_by_value, unregister_pickle_by_value)
from cloudpickle import DEFAULT_PROTOCOL  # noqa: F401

__all__ = ["CloudPickler", "Pickler", "dump", "dumps", "load", "loads",
           "register_pickle_by_value", "unregister_pickle_by_value", "DEFAULT_PROTOCOL"]
