"""Per-task overhead of nanoray next to its peers, measured in one run.

Figures (each the median of a few repeats, 5 by default, in one run: a
noisy machine moves single repeats by tens of percent):
  init           start-up until the first no-op task's result is back
  pipelined      no-op tasks submitted in a burst, then all collected (tasks/s)
  batched        10x as many no-op calls submitted as one batch, then all
                 values collected: Pool.map (nanoray's drop-in,
                 nanoray.util.multiprocessing, for nanoray), ProcessPoolExecutor.map
                 with Pool.map's chunks, joblib (calls/s); and nanoray's f.map,
                 which gives a ref per call, each its own object (calls/s)
  round trip     one no-op task submitted and its result awaited (us)
  put / get      of a small value (us), and of a 256 MiB float64 array (GB/s, us);
                 the ratio of the two gets shows that get does not copy
  array to task  a 256 MiB array handed to a task that reads one element (ms)
  actor create   Cls.remote() until its first call's result is back (ms)
  actor call     one no-op method call awaited (us); pipelined calls from one
                 caller (calls/s); num_cpus caller tasks each calling its own
                 actor (calls/s, all callers together); an async actor's
                 pipelined calls (calls/s)

Peers: multiprocessing.Pool and concurrent.futures.ProcessPoolExecutor with
the same number of processes and Python's default start method, and Ray
and joblib (batched calls only) when they are installed.  Pools have no
object store, so put/get have no peer figure; "array to task" is the
comparable cost (a pool pickles the array through a pipe).
"""

import argparse
import concurrent.futures
import gc
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time

import numpy as np

MiB = 1 << 20
BATCH = 10                                  # batched rows: this many times the pipelined burst


def noop(x=None):
    return x


def first_element(a):
    return float(a[0])


class Actor:
    def noop(self, x=None):
        return x


class AsyncActor:
    async def noop(self, x=None):
        return x


def _caller(api):
    def caller(h, n):
        api.get([h.noop.remote(i) for i in range(n)])
        return n
    return api.remote(caller)


def _bench_actors(ray, num_cpus, n_calls, n_rt, repeats, out):
    """Actor figures, for nanoray and for Ray (the same code)."""
    RActor = ray.remote(Actor)

    def create():
        t = time.perf_counter()
        a = RActor.remote()
        ray.get(a.noop.remote())
        dt = time.perf_counter() - t
        ray.kill(a)
        return dt
    create()                                          # warm: the class is exported once
    out["actor_create_ms"] = _typical(create, repeats) * 1e3
    a = RActor.remote()
    ray.get(a.noop.remote())

    def round_trip():
        t = time.perf_counter()
        for i in range(n_rt):
            ray.get(a.noop.remote(i))
        return (time.perf_counter() - t) / n_rt
    out["actor_round_trip_us"] = _typical(round_trip, repeats) * 1e6

    def pipelined():
        t = time.perf_counter()
        ray.get([a.noop.remote(i) for i in range(n_calls)])
        return time.perf_counter() - t
    out["actor_pipelined_calls_per_s"] = _rate(n_calls, _typical(pipelined, repeats))

    actors = [RActor.remote() for _ in range(num_cpus)]
    ray.get([h.noop.remote() for h in actors])
    caller = _caller(ray)
    per = max(1, n_calls // num_cpus)
    ray.get([caller.remote(h, 10) for h in actors])

    def n_to_n():
        t = time.perf_counter()
        ray.get([caller.remote(h, per) for h in actors])
        return time.perf_counter() - t
    out["actor_n_to_n_calls_per_s"] = _rate(per * num_cpus, _typical(n_to_n, repeats))

    aa = ray.remote(AsyncActor).remote()
    ray.get(aa.noop.remote())

    def async_pipelined():
        t = time.perf_counter()
        ray.get([aa.noop.remote(i) for i in range(n_calls)])
        return time.perf_counter() - t
    out["async_actor_calls_per_s"] = _rate(n_calls, _typical(async_pipelined, repeats))
    for h in [a, aa] + actors:
        ray.kill(h)


def _typical(fn, repeats):
    """The median time of `repeats` runs of fn."""
    return statistics.median(fn() for _ in range(repeats))


def _rate(n, seconds):
    return n / seconds


class Figures(dict):
    pass


# ---------------------------------------------------------------- nanoray

def _bench_ray_api(ray, init_kwargs, num_cpus, n_tasks, n_rt, big_bytes, repeats, full):
    """The Ray API's figures, for nanoray and for Ray itself (the same code:
    nanoray is a drop-in).  full=False skips what Ray has no cheap peer of
    and the small-value figures (Ray's counts are also capped: its tasks
    cost ~1 ms each)."""
    out = Figures()
    t0 = time.perf_counter()
    ray.init(num_cpus=num_cpus, **init_kwargs)
    rnoop = ray.remote(noop)
    ray.get(rnoop.remote())
    out["init_s"] = time.perf_counter() - t0
    rfirst = ray.remote(first_element)
    try:
        # let every worker come up before timing steady-state figures
        ray.get([rnoop.remote(i) for i in range(200)])

        def pipelined():
            t = time.perf_counter()
            ray.get([rnoop.remote(i) for i in range(n_tasks)])
            return time.perf_counter() - t
        out["pipelined_tasks_per_s"] = _rate(n_tasks, _typical(pipelined, repeats))

        if hasattr(rnoop, "map"):               # nanoray's batched submission
            def map_refs():
                t = time.perf_counter()
                ray.get(rnoop.map(range(BATCH * n_tasks)))
                return time.perf_counter() - t
            out["map_refs_per_s"] = _rate(BATCH * n_tasks, _typical(map_refs, repeats))
            from nanoray.util.multiprocessing import Pool
            with Pool(num_cpus) as pool:          # its drop-in: values, chunks as Pool.map's
                pool.map(noop, range(1000))

                def batched():
                    t = time.perf_counter()
                    pool.map(noop, range(BATCH * n_tasks))
                    return time.perf_counter() - t
                out["batched_tasks_per_s"] = _rate(BATCH * n_tasks, _typical(batched, repeats))

        def round_trip():
            t = time.perf_counter()
            for i in range(n_rt):
                ray.get(rnoop.remote(i))
            return (time.perf_counter() - t) / n_rt
        out["round_trip_us"] = _typical(round_trip, repeats) * 1e6
        _bench_actors(ray, num_cpus, n_tasks, n_rt, repeats, out)

        big = np.ones(big_bytes // 8)

        def put_big():
            t = time.perf_counter()
            r = ray.put(big)
            dt = time.perf_counter() - t
            del r
            return dt
        if full:
            out["put_big_first_GBps"] = big_bytes / put_big() / 1e9
        out["put_big_GBps"] = big_bytes / _typical(put_big, repeats) / 1e9
        if not full:
            return out

        small = {"a": 1, "b": [1, 2, 3], "c": "text"}

        def put_small():
            t = time.perf_counter()
            for _ in range(n_rt):
                ray.put(small)
            return (time.perf_counter() - t) / n_rt
        out["put_small_us"] = _typical(put_small, repeats) * 1e6
        ref = ray.put(small)

        def get_small():
            t = time.perf_counter()
            for _ in range(n_rt):
                ray.get(ref)
            return (time.perf_counter() - t) / n_rt
        out["get_small_us"] = _typical(get_small, repeats) * 1e6

        bref = ray.put(big)

        def get_big():
            t = time.perf_counter()
            v = ray.get(bref)
            dt = time.perf_counter() - t
            assert v.shape == big.shape and not v.flags.owndata
            return dt
        out["get_big_us"] = _typical(get_big, repeats) * 1e6
        # Zero copy: getting 256 MiB should cost about what getting a tiny
        # value does (a copy takes ~14 ms even into warm memory).
        out["get_big_over_small"] = out["get_big_us"] / out["get_small_us"]

        def to_task():
            t = time.perf_counter()
            ray.get(rfirst.remote(bref))
            return time.perf_counter() - t
        out["array_to_task_ms"] = _typical(to_task, repeats) * 1e3
        del bref
    finally:
        ray.shutdown()
    return out


def bench_nanoray(num_cpus, n_tasks, n_rt, big_bytes, repeats):
    import nanoray
    return _bench_ray_api(nanoray, {}, num_cpus, n_tasks, n_rt, big_bytes, repeats, True)


# ---------------------------------------------------------------- pools

def _bench_pool(make, submit, result, batch, num_cpus, n_tasks, n_rt, big_bytes, repeats):
    out = Figures()
    t0 = time.perf_counter()
    pool = make(num_cpus)
    result(submit(pool, noop, (None,)))
    out["init_s"] = time.perf_counter() - t0
    try:
        [result(f) for f in [submit(pool, noop, (i,)) for i in range(200)]]

        def pipelined():
            t = time.perf_counter()
            futs = [submit(pool, noop, (i,)) for i in range(n_tasks)]
            for f in futs:
                result(f)
            return time.perf_counter() - t
        out["pipelined_tasks_per_s"] = _rate(n_tasks, _typical(pipelined, repeats))

        def batched():
            t = time.perf_counter()
            batch(pool, noop, range(BATCH * n_tasks), num_cpus)
            return time.perf_counter() - t
        out["batched_tasks_per_s"] = _rate(BATCH * n_tasks, _typical(batched, repeats))

        def round_trip():
            t = time.perf_counter()
            for i in range(n_rt):
                result(submit(pool, noop, (i,)))
            return (time.perf_counter() - t) / n_rt
        out["round_trip_us"] = _typical(round_trip, repeats) * 1e6

        big = np.ones(big_bytes // 8)

        def to_task():
            t = time.perf_counter()
            result(submit(pool, first_element, (big,)))
            return time.perf_counter() - t
        out["array_to_task_ms"] = _typical(to_task, repeats) * 1e3
    finally:
        if hasattr(pool, "terminate"):
            pool.terminate()
            pool.join()
        else:
            pool.shutdown(wait=True)
    return out


def _chunksize(n, num_cpus):
    return -(-n // (4 * num_cpus))            # Pool.map's default: 4 chunks per process


def bench_pool(num_cpus, n_tasks, n_rt, big_bytes, repeats):
    return _bench_pool(lambda n: multiprocessing.Pool(n),
                       lambda p, f, a: p.apply_async(f, a), lambda r: r.get(),
                       lambda p, f, xs, c: p.map(f, xs),
                       num_cpus, n_tasks, n_rt, big_bytes, repeats)


def bench_executor(num_cpus, n_tasks, n_rt, big_bytes, repeats):
    return _bench_pool(lambda n: concurrent.futures.ProcessPoolExecutor(n),
                       lambda p, f, a: p.submit(f, *a), lambda r: r.result(),
                       lambda p, f, xs, c: list(p.map(f, xs, chunksize=_chunksize(len(xs), c))),
                       num_cpus, n_tasks, n_rt, big_bytes, repeats)


def bench_joblib(num_cpus, n_tasks, n_rt, big_bytes, repeats):
    """joblib's batched calls (its default loky backend, batch_size="auto"):
    the batched row only."""
    from joblib import Parallel, delayed
    out = Figures()
    with Parallel(n_jobs=num_cpus) as par:
        par(delayed(noop)(i) for i in range(1000))

        def batched():
            t = time.perf_counter()
            par(delayed(noop)(i) for i in range(BATCH * n_tasks))
            return time.perf_counter() - t
        out["batched_tasks_per_s"] = _rate(BATCH * n_tasks, _typical(batched, repeats))
    return out


def bench_ray(num_cpus, n_tasks, n_rt, big_bytes, repeats):
    import ray
    return _bench_ray_api(ray, {"include_dashboard": False, "logging_level": "ERROR"},
                          num_cpus, min(n_tasks, 5000), min(n_rt, 300), big_bytes, repeats, False)


# ---------------------------------------------------------------- report

ROWS = [
    ("init_s", "init until first task", "s", "lower"),
    ("pipelined_tasks_per_s", "pipelined no-op tasks", "tasks/s", "higher"),
    ("batched_tasks_per_s", "batched no-op calls, values (Pool.map...)", "calls/s", "higher"),
    ("map_refs_per_s", "batched no-op calls, a ref each (f.map)", "calls/s", "higher"),
    ("round_trip_us", "task round trip", "us", "lower"),
    ("put_small_us", "put, small value", "us", "lower"),
    ("get_small_us", "get, small value", "us", "lower"),
    ("put_big_first_GBps", "put 256 MiB, first (cold pages)", "GB/s", "higher"),
    ("put_big_GBps", "put 256 MiB, warm store", "GB/s", "higher"),
    ("get_big_us", "get 256 MiB", "us", "lower"),
    ("get_big_over_small", "get 256 MiB / get small value", "ratio", "lower"),
    ("array_to_task_ms", "256 MiB array to a task", "ms", "lower"),
    ("actor_create_ms", "actor creation until first result", "ms", "lower"),
    ("actor_round_trip_us", "actor call round trip", "us", "lower"),
    ("actor_pipelined_calls_per_s", "pipelined actor calls, 1 caller", "calls/s", "higher"),
    ("actor_n_to_n_calls_per_s", "actor calls, N callers to N actors", "calls/s", "higher"),
    ("async_actor_calls_per_s", "pipelined async actor calls", "calls/s", "higher"),
]


def _fmt(v):
    if v is None:
        return "-"
    if v >= 1000:
        return "{:,.0f}".format(v)
    if v >= 10:
        return "{:.1f}".format(v)
    return "{:.3g}".format(v)


def report(results):
    peers = [p for p in ("Pool", "ProcessPoolExecutor", "Ray", "joblib") if p in results]
    nr = results["nanoray"]
    head = ["figure", "unit", "nanoray"] + peers + ["nanoray vs " + p for p in peers]
    rows = [head]
    for key, label, unit, better in ROWS:
        row = [label, unit, _fmt(nr.get(key))]
        row += [_fmt(results[p].get(key)) for p in peers]
        for p in peers:
            a, b = nr.get(key), results[p].get(key)
            if a is None or b is None or a == 0 or b == 0:
                row.append("-")
            else:
                row.append("{:.2f}x {}".format(a / b if better == "higher" else b / a, "better" if (a > b) == (better == "higher") else "worse"))
        rows.append(row)
    # The actor bars compare a call with the peers' *task* round trip.
    pairs = [("actor call / %s task round trip" % p, results[p].get("round_trip_us"))
             for p in peers] + [("actor call / nanoray task round trip", nr.get("round_trip_us"))]
    for label, b in pairs:
        a = nr.get("actor_round_trip_us")
        if a and b:
            rows.append([label, "ratio", _fmt(a / b)] + ["-"] * (len(head) - 3))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i])
                               for i, c in enumerate(r)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine():
    return "%s, %d CPUs, Python %s, numpy %s" % (
        platform.platform(), os.cpu_count(), platform.python_version(), np.__version__)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="nanoray microbenchmark", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--tasks", type=int, default=20000, help="tasks per pipelined burst")
    ap.add_argument("--round-trips", type=int, default=2000)
    ap.add_argument("--big-mib", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    ap.add_argument("--only", choices=["nanoray", "Pool", "ProcessPoolExecutor", "Ray", "joblib"],
                    action="append", help="run only these (repeatable)")
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args(argv)
    if a.quick:
        a.tasks, a.round_trips, a.big_mib, a.repeats = 2000, 200, 16, 1
    args = (a.num_cpus, a.tasks, a.round_trips, a.big_mib * MiB, a.repeats)
    runs = [("nanoray", bench_nanoray), ("Pool", bench_pool),
            ("ProcessPoolExecutor", bench_executor)]
    try:
        import ray  # noqa: F401
        runs.append(("Ray", bench_ray))
    except ImportError:
        pass
    try:
        import joblib  # noqa: F401
        runs.append(("joblib", bench_joblib))
    except ImportError:
        pass
    results = {}
    print("nanoray microbenchmark: %s" % machine())
    print("num_cpus=%d, %d tasks per burst, %d round trips, %d MiB array, median of %d repeats\n"
          % (a.num_cpus, a.tasks, a.round_trips, a.big_mib, a.repeats), flush=True)
    for name, fn in runs:
        if a.only and name not in a.only and name != "nanoray":
            continue
        gc.collect()
        results[name] = fn(*args)
        print("  measured %s" % name, file=sys.stderr, flush=True)
    print(report(results))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine(), "args": vars(a), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
