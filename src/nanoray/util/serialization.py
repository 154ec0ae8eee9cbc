"""Custom serializers for classes that cannot be pickled as they are (Ray's
``ray.util.register_serializer``).

``register_serializer(cls, serializer=s, deserializer=d)`` makes this
process store an instance ``obj`` of ``cls`` as ``s(obj)`` and rebuild it
with ``d(s(obj))`` wherever it is read; the deserializer travels with the
value (pickled by cloudpickle), so the reading process needs no
registration.  As in Ray, registration is per process: a task or actor that
returns such instances registers the serializer itself.  Instances of
builtin types (int, str, list, dict, ...) and numpy arrays are always
stored as they are."""

import threading

from nanoray._core import _runtime as _rt

__all__ = ["register_serializer", "deregister_serializer"]

_registered = {}          # cls -> (serializer, deserializer), for the Ray backend
_lock = threading.Lock()


def _ray():
    import sys
    from nanoray import _api
    b = _api._backend
    return sys.modules.get("ray") if b is not None and b.remote else None


def register_serializer(cls, *, serializer, deserializer):
    """Stores instances of cls as serializer(obj), rebuilt by
    deserializer(that) (see the module's docstring)."""
    if not isinstance(cls, type):
        raise TypeError("register_serializer: cls must be a class, got %r" % (cls,))
    if not callable(serializer) or not callable(deserializer):
        raise TypeError("register_serializer: serializer and deserializer must be callable")

    def reduce(obj):
        return deserializer, (serializer(obj),)
    with _lock:
        _registered[cls] = (serializer, deserializer)
        _rt.set_reducer(cls, reduce)
    ray = _ray()
    if ray is not None:
        ray.util.register_serializer(cls, serializer=serializer, deserializer=deserializer)


def deregister_serializer(cls):
    """Forgets cls's serializer in this process (instances are pickled as
    any other object again)."""
    with _lock:
        _registered.pop(cls, None)
        _rt.set_reducer(cls, None)
    ray = _ray()
    if ray is not None:
        ray.util.deregister_serializer(cls)


def sync_to_ray(ray):
    """When the Ray backend starts: the serializers registered before it."""
    with _lock:
        items = list(_registered.items())
    for cls, (s, d) in items:
        ray.util.register_serializer(cls, serializer=s, deserializer=d)
