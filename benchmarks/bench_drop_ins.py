"""The drop-ins next to the originals they replace, in one run.

    python benchmarks/bench_drop_ins.py [--rounds 5]

nanoray.util.multiprocessing.Pool vs multiprocessing.Pool, RayExecutor vs
ProcessPoolExecutor, joblib on nanoray vs joblib's loky, and Dask on
nanoray vs Dask's threaded and multiprocessing schedulers; each with tiny
calls and with numpy arrays as arguments.  Two workers for everyone
(num_cpus=2).  Prints the median of the rounds, and the ratio.
"""

import argparse
import concurrent.futures as cf
import multiprocessing
import statistics
import time

import numpy as np

N_ITEMS = 100_000          # tiny map items
N_ROUND_TRIPS = 300        # apply / submit round trips
ARRAY_MB = 64
N_ARRAYS = 8


def noop(x):
    return x


def total(a):
    return float(a.sum())


def timed(fn, rounds):
    fn()                                        # warm
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def side_by_side(name, fn, ours, theirs, rounds, peer):
    """(name, our time, the peer's, peer): fn run on each; a round-trip row
    is per call."""
    a, b = timed(lambda: fn(ours), rounds), timed(lambda: fn(theirs), rounds)
    if "round trip" in name:
        a, b = a / N_ROUND_TRIPS, b / N_ROUND_TRIPS
    return name, a, b, peer


def arrays():
    n = ARRAY_MB * (1 << 20) // 8
    return [np.full(n, i, dtype=np.float64) for i in range(N_ARRAYS)]


def pool_rows(rounds, nanoray):
    from nanoray.util.multiprocessing import Pool
    data, arrs = list(range(N_ITEMS)), arrays()
    rows = []
    with Pool(2) as ours, multiprocessing.Pool(2) as theirs:
        for name, fn in (
                ("Pool.map, %d tiny items (default chunks)" % N_ITEMS, lambda p: p.map(noop, data)),
                ("Pool.apply round trip", lambda p: [p.apply(noop, (1,))
                                                     for _ in range(N_ROUND_TRIPS)]),
                ("Pool.map, %d arrays of %d MiB" % (N_ARRAYS, ARRAY_MB),
                 lambda p: p.map(total, arrs, chunksize=1))):
            rows.append(side_by_side(name, fn, ours, theirs, rounds, "multiprocessing.Pool"))
    return rows


def executor_rows(rounds, nanoray):
    from nanoray.util.concurrent.futures import RayExecutor
    arrs = arrays()
    rows = []
    with RayExecutor(max_workers=2) as ours, cf.ProcessPoolExecutor(2) as theirs:
        for name, fn in (
                ("submit + result round trip", lambda e: [e.submit(noop, 1).result()
                                                         for _ in range(N_ROUND_TRIPS)]),
                ("map, 20000 tiny items, chunksize=1000",
                 lambda e: list(e.map(noop, range(20000), chunksize=1000))),
                ("submit %d arrays of %d MiB" % (N_ARRAYS, ARRAY_MB),
                 lambda e: [f.result() for f in [e.submit(total, a) for a in arrs]])):
            rows.append(side_by_side(name, fn, ours, theirs, rounds, "ProcessPoolExecutor"))
    return rows


def joblib_rows(rounds, nanoray):
    import joblib
    from nanoray.util.joblib import register_ray
    register_ray()
    arrs = arrays()
    rows = []
    for name, fn in (
            ("Parallel, 10000 tiny calls",
             lambda: joblib.Parallel(n_jobs=2)(joblib.delayed(noop)(i) for i in range(10000))),
            ("Parallel, %d arrays of %d MiB" % (N_ARRAYS, ARRAY_MB),
             lambda: joblib.Parallel(n_jobs=2)(joblib.delayed(total)(a) for a in arrs))):
        def ours():
            with joblib.parallel_backend("nanoray"):
                fn()
        rows.append((name, timed(ours, rounds), timed(fn, rounds), "joblib loky"))
    return rows


def dask_rows(rounds, nanoray):
    import dask.array as da
    from nanoray.util.dask import ray_dask_get
    x = da.random.RandomState(0).random((4000, 4000), chunks=(1000, 1000))
    y = (x + x.T).sum(axis=0)
    rows = []
    for peer in ("threads", "processes"):
        rows.append(("(x + x.T).sum(), 4000x4000 in 16 chunks",
                     timed(lambda: y.compute(scheduler=ray_dask_get), rounds),
                     timed(lambda: y.compute(scheduler=peer, num_workers=2), rounds),
                     "Dask %s" % peer))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    import nanoray
    nanoray.init(num_cpus=2)
    print("%-48s %12s %12s %8s  %s" % ("figure", "nanoray", "peer", "ratio", "peer"))
    for section in (pool_rows, executor_rows, joblib_rows, dask_rows):
        for name, ours, theirs, peer in section(args.rounds, nanoray):
            unit, scale = ("us", 1e6) if ours < 1e-3 else ("ms", 1e3)
            print("%-48s %9.1f %s %9.1f %s %7.1fx  %s" % (
                name, ours * scale, unit, theirs * scale, unit, theirs / ours, peer))
    nanoray.shutdown()


if __name__ == "__main__":
    main()
