# The functions a worker runs: loaded once per export (a cache), and their
# calls counted for max_calls (the worker leaves after that many calls of a
# function, as in Ray).
# Included by _runtime.pyx: one extension module, one concern per file.


# Deserialized functions kept per worker; past this many the cache restarts
# (a program with more distinct remote functions pays an unpickle again).
FUNCTION_CACHE_MAX = 4096


cdef tuple _function_entry(Region reg, uint64_t fid):
    """(function, its name) of the exported function fid, cached."""
    global _last_fid, _last_entry
    cdef bint is_error = False
    if fid == _last_fid and _last_entry is not None:
        return _last_entry
    entry = _funcs.get(fid)
    if entry is None:
        f = _value(reg, fid, &is_error)
        if is_error:                     # never cached: the next task tries again
            raise _exc.RaySystemError("nanoray: the task's function could not be loaded: %s"
                                      % _exc._safe_repr(f))
        if len(_funcs) >= FUNCTION_CACHE_MAX:
            _funcs.clear()
        entry = (f, getattr(f, "__qualname__", None) or getattr(f, "__name__", "task"))
        _funcs[fid] = entry
    _last_fid = fid
    _last_entry = <tuple>entry
    return <tuple>entry


cdef object _function(Region reg, uint64_t fid):
    return _function_entry(reg, fid)[0]


cdef dict _calls_made = {}         # function id -> calls started here (those with max_calls)
cdef bint _retire_after = False    # one reached its max_calls: leave after this task


cdef void _count_call(Region reg, _Call c) except *:
    """A pool task starting: counts it against its function's max_calls."""
    global _retire_after
    most = c.extras.get("max_calls")
    if not most:
        return
    cdef nr_spec_t *spec = <nr_spec_t *>(reg.r.base + nr_task(&reg.r, c.t).spec)
    n = _calls_made.get(spec.func_id, 0) + 1
    _calls_made[spec.func_id] = n
    if n >= most:
        _retire_after = True
