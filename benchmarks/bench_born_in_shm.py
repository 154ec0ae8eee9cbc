"""Returning a large array made in a task: born in the store (numpy's
allocator hook, NEP 49) against the copy path and Ray.

For a 256 MiB float64 array made in a task (np.full: every page written),
measures, from submit until the caller holds the result:
  - make it and return a float (the floor: no array leaves the task);
  - make it and return it (born: no byte copied; copy: one copy into the
    store; Ray: one copy into plasma);
  - the first task on a fresh 256 MiB result: x + 1 by ref (a 256 MiB
    result again).
And, inside one task, the allocator itself: temporaries of 1, 8 and 64 MiB
made and dropped in a loop (np.ones; x + 1), born in the store against the
previous handler (malloc: the hook paused in that worker for the loop).
Each mode runs in fresh processes, alternating, several rounds; within a
process each figure is the median of --reps runs after one warm-up, and
the table shows the median over rounds.  Modes: nanoray (arrays born in
the store, the default), nanoray with _system_config={"born_in_shm":
False} (the copy path), and Ray when a Python with Ray is given (--ray-python,
default /tmp/rayvenv/bin/python if it exists).

    python benchmarks/bench_born_in_shm.py --rounds 3 --reps 5
"""

import argparse
import os
import statistics
import subprocess
import sys

CHILD = r"""
import os, statistics, sys, time
import numpy as np
mode, mib, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
n = mib * (1 << 20) // 8
if mode == "ray":
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=(4 * mib + 512) << 20)
else:
    import nanoray as ray
    cfg = {"born_in_shm": mode == "born"}
    ray.init(num_cpus=2, object_store_memory=(4 * mib + 256) << 20, _system_config=cfg)

@ray.remote
def make_float(n):
    a = np.full(n, 1.0)
    return float(a[-1])

@ray.remote
def make_array(n):
    return np.full(n, 1.0)

@ray.remote
def plus_one(x):
    return x + 1

def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t

def first_task():
    r = make_array.remote(n)
    ray.wait([r])
    t = time.perf_counter()
    y = ray.get(plus_one.remote(r))
    dt = time.perf_counter() - t
    assert y[0] == 2.0
    return dt

def return_array():
    a = ray.get(make_array.remote(n))
    assert a[-1] == 1.0

out = {"float": [], "array": [], "first": []}
for i in range(reps + 1):                 # the first is a warm-up
    f = timed(lambda: ray.get(make_float.remote(n)))
    a = timed(return_array)
    s = first_task()
    if i:
        out["float"].append(f)
        out["array"].append(a)
        out["first"].append(s)
if mode == "born":
    from nanoray._core import _runtime as rt

    @ray.remote
    def temporaries(paused, size, n):
        rt.born_pause(paused)
        try:
            x = np.ones(size // 8)
            t = time.perf_counter()
            for _ in range(n):
                b = np.ones(size // 8)
                c = x + 1
                del b, c
            return (time.perf_counter() - t) / n
        finally:
            rt.born_pause(False)

    for size in (1, 8, 64):
        for paused in (False, True):
            k = "tmp%d%s" % (size, "m" if paused else "b")
            out[k] = [ray.get(temporaries.remote(paused, size << 20, 20 if size > 8 else 200))
                      for _ in range(reps)]
print(" ".join("%s=%.6f" % (k, statistics.median(v)) for k, v in out.items()))
ray.shutdown()
"""

LABELS = {"born": "nanoray (born in store)", "copy": "nanoray (copy path)", "ray": "Ray"}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--mib", type=int, default=256)
    p.add_argument("--ray-python", default="/tmp/rayvenv/bin/python")
    args = p.parse_args()
    modes = {"born": sys.executable, "copy": sys.executable}
    if args.ray_python and os.path.exists(args.ray_python):
        modes["ray"] = args.ray_python
    else:
        print("Ray: skipped (no Python with Ray at %s)" % args.ray_python)
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    got = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode, python in modes.items():
            e = env if mode != "ray" else {k: v for k, v in env.items() if k != "PYTHONPATH"}
            if mode != "ray":
                e = dict(e, PYTHONPATH=os.path.abspath(src))
            out = subprocess.run([python, "-c", CHILD, mode, str(args.mib), str(args.reps)],
                                 capture_output=True, text=True, timeout=900, env=e)
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            line = out.stdout.strip().splitlines()[-1]
            got[mode].append({k: float(v) for k, v in (kv.split("=") for kv in line.split())})
    print("%d MiB array, medians of %d rounds x %d reps (ms)" % (args.mib, args.rounds, args.reps))
    print("%-26s %14s %16s %12s %22s" % ("", "make, float", "make, return it", "difference",
                                        "first task (x+1 by ref)"))
    for mode, rows in got.items():
        med = {k: statistics.median(r[k] for r in rows) * 1e3 for k in rows[0]}
        print("%-26s %14.1f %16.1f %12.1f %22.1f" % (
            LABELS[mode], med["float"], med["array"], med["array"] - med["float"], med["first"]))
    rows = got["born"]
    print("\ntemporaries in a loop, one np.ones and one x + 1 each (us per iteration)")
    print("%-10s %16s %16s" % ("size", "born in store", "malloc"))
    for size in (1, 8, 64):
        print("%-10s %16.1f %16.1f" % (
            "%d MiB" % size, statistics.median(r["tmp%db" % size] for r in rows) * 1e6,
            statistics.median(r["tmp%dm" % size] for r in rows) * 1e6))


if __name__ == "__main__":
    main()
