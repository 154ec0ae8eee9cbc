"""The NR_PROFILE instrumentation (csrc/nr_prof.h) and the analysis behind
benchmarks/bench_breakdown.py.

The normal build must carry none of it; the trace reader, the phase split
and the contention model are checked on traces built by hand; and, when the
profile build exists (benchmarks/bench_breakdown.py makes it in build/prof),
a real trace is taken across fork (workers), threads, and a killed worker."""
import ctypes
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCH)
import _breakdown_model as M    # noqa: E402
import _breakdown_trace as T    # noqa: E402

PROF_PKG = os.path.join(ROOT, "build", "prof", "pkg")


def test_normal_build_has_no_profiling():
    from nanoray._core import _runtime
    lib = ctypes.CDLL(_runtime.__file__)
    for name in ("nr_prof_mark", "nr_prof_lock_taken", "__wrap_pthread_mutex_unlock"):
        assert not hasattr(lib, name), name


def rec(kind, t0, t1=0, t2=0, site=0, pid=1, flags=0, aux=0):
    return (t0, t1, t2, site, aux, pid, kind, flags)


def synthetic_round_trip(base, pid_d=1, pid_w=2):
    """One round trip: submit section 1000..1100, worker takes at 5000,
    body 6000..6400, seal ends 7000, GOT at 9000, released at 9500."""
    S_SUB, S_NEXT, S_SEAL, S_DEC = 0x10, 0x20, 0x30, 0x40
    return [rec(T.MARK, base, base, site=1, pid=pid_d),
            rec(T.LOCK, base + 1000, base + 1020, base + 1100, S_SUB, pid_d),
            rec(T.MARK, base + 1500, base + 1500, site=2, pid=pid_d),
            rec(T.LOCK, base + 5000, base + 5010, base + 5100, S_NEXT, pid_w, flags=T.SPUN),
            rec(T.MARK, base + 6000, base + 6000, site=5, pid=pid_w),
            rec(T.MARK, base + 6400, base + 6400, site=6, pid=pid_w),
            rec(T.LOCK, base + 6900, base + 6950, base + 7000, S_SEAL, pid_w),
            rec(T.MARK, base + 9000, base + 9000, site=3, pid=pid_d),
            rec(T.LOCK, base + 9100, base + 9150, base + 9300, S_DEC, pid_d),
            rec(T.MARK, base + 9500, base + 9500, site=4, pid=pid_d)]


NAMES = {0x10: ("nr_task_submit",) * 2 + ("nr_sched.c:1",),
         0x20: ("nr_task_next",) * 2 + ("nr_sched.c:2",),
         0x30: ("nr_object_seal",) * 2 + ("nr_objects.c:3",),
         0x40: ("nr_object_decref",) * 2 + ("nr_objects.c:4",)}


def as_recs(rows):
    return np.array(rows, dtype=T.REC)


def test_round_trip_phases_from_a_synthetic_trace(tmp_path):
    rows = synthetic_round_trip(0) + synthetic_round_trip(100000) + synthetic_round_trip(200000)
    path = tmp_path / "t.bin"
    T.create(str(path), cap=64)
    with open(path, "r+b") as f:                 # as the processes would have written it
        f.seek(16)
        f.write(np.uint64(len(rows)).tobytes())
        f.seek(64)
        f.write(as_recs(rows).tobytes())
    recs, dropped = T.load(str(path))
    assert dropped == 0 and len(recs) == len(rows)
    ph, per_site, n = T.round_trips(recs, NAMES)
    assert n == 2                                # the last one has no successor to bound it
    assert ph["queue: submitted until a worker asks the lock"] == [3.9, 3.9]
    assert ph["take: nr_task_next section (wait + hold)"] == [0.1, 0.1]
    assert ph["deserialize: taken until the body runs (function, args)"] == [0.9, 0.9]
    assert ph["run: the body (two marks, no work)"] == [0.4, 0.4]
    assert ph["store: body end to sealed (pickle, alloc, seal sections)"] == [0.6, 0.6]
    assert ph["notify + get: sealed until get() returns"] == [2.0, 2.0]
    assert ph["round trip: remote() to get() returned"] == [9.0, 9.0]
    assert per_site[("driver", "nr_task_submit@nr_sched.c:1")] == 1.0
    assert per_site[("worker", "nr_object_seal@nr_objects.c:3")] == 1.0
    holds = T.lock_holds(recs, NAMES, 0, 10 ** 9)
    assert holds["nr_task_next@nr_sched.c:2"]["contended"] == 3
    assert holds["nr_object_decref@nr_objects.c:4"]["hold_p50"] == pytest.approx(0.15)


def test_a_full_trace_drops_records_and_says_so(tmp_path):
    path = tmp_path / "t.bin"
    T.create(str(path), cap=2)
    with open(path, "r+b") as f:
        f.seek(16)
        f.write(np.uint64(5).tobytes())
    recs, dropped = T.load(str(path))
    assert len(recs) == 2 and dropped == 3


def test_model_matches_the_simple_cases():
    # One core: no queueing, X = 1 / (Z + D).
    x, rho, w = M.mva(1, 1.0, 9.0)
    assert x == pytest.approx(1e5) and w == pytest.approx(0.0)
    # Never above the lock's bound, and waiting grows with cores.
    prev = -1.0
    for n in (2, 8, 32, 128):
        x, rho, w = M.mva(n, 0.5, 5.0)
        assert x <= 1e6 / 0.5 + 1e-6 and rho <= 1.0 + 1e-9 and w >= prev
        prev = w
    assert M.mva(128, 0.5, 5.0)[1] == pytest.approx(1.0, abs=1e-3)   # saturated
    assert M.saturation_cores(0.5, 5.0, 0.0) == pytest.approx(11.0)


needs_prof = pytest.mark.skipif(
    not glob.glob(os.path.join(PROF_PKG, "nanoray", "_core", "_runtime*.so")),
    reason="no profile build (python3 benchmarks/bench_breakdown.py makes build/prof)")

CHILD = r"""
import json, os, signal, sys, threading, time
import nanoray as ray
from _breakdown_mark import mark, noop
ray.init(num_cpus=2)
f = ray.remote(noop)
ray.get([f.remote() for _ in range(50)])
def submitter():
    for _ in range(100):
        ray.get(f.remote())
ts = [threading.Thread(target=submitter) for _ in range(3)]
for t in ts: t.start()
for t in ts: t.join()
@ray.remote
def pid():
    return os.getpid()
victim = ray.get(pid.remote())
os.kill(victim, signal.SIGKILL)          # a worker dies; the trace must stay readable
ray.get([f.remote() for _ in range(50)])
mark(7, 42)
ray.shutdown()
print(json.dumps({"driver": os.getpid(), "victim": victim}))
"""


@needs_prof
def test_profile_build_traces_workers_threads_and_a_death(tmp_path):
    path = str(tmp_path / "t.bin")
    T.create(path, cap=200000)
    env = dict(os.environ, PYTHONPATH=PROF_PKG + os.pathsep + BENCH, NANORAY_PROF_FILE=path)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    recs, dropped = T.load(path)
    assert dropped == 0
    locks = recs[recs["kind"] == T.LOCK]
    assert len(locks) > 1000
    # Every section: asked <= taken <= released (per thread, whatever the
    # interleaving of the driver's threads).
    assert (locks["t0"] <= locks["t1"]).all() and (locks["t1"] <= locks["t2"]).all()
    pids = set(locks["pid"].tolist())
    assert info["driver"] in pids and info["victim"] in pids and len(pids) >= 3   # forked workers
    m = recs[(recs["kind"] == T.MARK) & (recs["site"] == 7)]
    assert len(m) == 1 and m[0]["aux"] == 42 and m[0]["pid"] == info["driver"]
    so = glob.glob(os.path.join(PROF_PKG, "nanoray", "_core", "_runtime*.so"))[0]
    names = T.resolve(so, locks["site"])
    fns = {v[0] for v in names.values()}
    assert {"nr_task_submit", "nr_object_seal"} <= fns
    assert fns & {"nr_task_next", "nr_task_finish_next"}     # the worker's take


@needs_prof
def test_without_a_trace_file_the_profile_build_records_nothing(tmp_path):
    env = dict(os.environ, PYTHONPATH=PROF_PKG + os.pathsep + BENCH)
    env.pop("NANORAY_PROF_FILE", None)
    code = ("import nanoray as ray\nfrom _breakdown_mark import mark, noop\nray.init(num_cpus=1)\n"
            "ray.get(ray.remote(noop).remote())\nmark(1)\nray.shutdown()\nprint('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
