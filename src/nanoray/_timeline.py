"""nanoray.timeline(): the task events recorded in the shared region.

Each process records a finished task or actor call in a ring in the region
(csrc/nr_region.c, nr_event_record: an atomic add and a 128-byte write, no
lock), just after its results are sealed: its name, process, start and
end, and the bytes of its arguments and returns.  timeline() turns the newest of them into Chrome trace events, one
track per process, viewable in Perfetto (ui.perfetto.dev) or
chrome://tracing."""

import json

_KIND = {0: "task", 1: "actor_creation_task", 2: "actor_task"}


def events_as_trace():
    from nanoray import _api
    from nanoray._core import _runtime as _rt
    backend = _api._get_backend()
    rows = _rt.events(backend.region)
    trace = []
    for start, end, task, kind, pid, name, bytes_in, bytes_out, failed in rows:
        trace.append({
            "cat": _KIND.get(kind, "task"), "name": name, "ph": "X",
            "pid": "node 127.0.0.1", "tid": "worker %d" % pid,
            "ts": start / 1000.0, "dur": max(end - start, 0) / 1000.0,
            "args": {"task_id": "%016x" % task, "bytes_in": bytes_in, "bytes_out": bytes_out,
                     "failed": failed},
            "cname": "terrible" if failed else "generic_work"})
    return trace


def timeline(filename=None):
    trace = events_as_trace()
    if filename is None:
        return trace
    with open(filename, "w") as f:
        json.dump(trace, f)
    return None
