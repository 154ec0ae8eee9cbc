"""Marks for benchmarks/bench_breakdown.py: phase boundaries written into the
NR_PROFILE trace (and, under callgrind, dumps of the counts so far) by
calling nr_prof_mark in the runtime's own shared object through ctypes.

Imported by the driver and, through the task functions below (pickled by
reference), by the workers: PYTHONPATH must hold this directory."""
import ctypes

# Mark ids (the trace's `site` for a mark record).
RT_BEGIN, SUBMITTED, GOT, RELEASED, RUN_B, RUN_E = 1, 2, 3, 4, 5, 6
BATCH_B, BATCH_SUBMITTED, BATCH_E = 10, 11, 12
CAL = 20            # calibration: back-to-back marks measure one mark's cost
CG_ZERO = 1000      # under callgrind: zero the counts (other ids dump them)

_fn = None


def mark(mid, arg=0):
    global _fn
    if _fn is None:
        from nanoray._core import _runtime
        lib = ctypes.CDLL(_runtime.__file__)
        f = lib.nr_prof_mark
        f.argtypes = [ctypes.c_uint32, ctypes.c_int64]
        f.restype = None
        _fn = f
    _fn(mid, arg)


def noop():
    """The pipelined workload's task: nothing at all."""


def noop_marked():
    """The round trip's task: marks where its body begins and ends."""
    mark(RUN_B)
    mark(RUN_E)


def cg_zero():
    """Zeroes this worker's callgrind counts (a no-op outside valgrind)."""
    mark(CG_ZERO)


def cg_dump():
    """Dumps this worker's callgrind counts (a no-op outside valgrind)."""
    mark(CG_ZERO + 1)


def pin_to(cpu):
    """Pins the calling process to one CPU."""
    import os
    os.sched_setaffinity(0, {cpu})
