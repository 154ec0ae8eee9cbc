"""Parallel efficiency with short CPU-bound tasks: how much of the machine's
CPU reaches the work, and how much the runtime burns around it.

Each task does a fixed amount of work (a calibrated Python loop, not a
wall-clock spin: work that is preempted takes longer, so CPU stolen by a
spinning waiter shows).  Efficiency = ideal time / measured time, where the
ideal is (tasks x work) / CPUs, with the work timed alone on an idle CPU.

Peers, run in the same process one after another:
  bare processes   num_cpus forked processes each running its share in a loop
                   (the machine's own ceiling: no runtime at all)
  Pool.map chunks  multiprocessing.Pool(num_cpus).map(fn, range(n)) with its
                   default chunksize (chunks of about n / (4 x processes))
  Pool.apply_async one task per call, as nanoray submits them
  nanoray          [f.remote(i) for i in range(n)], then get() of the list
                   (Ray's API: one task per call)
  nanoray f.map    get(f.map(range(n))): nanoray's batched submission, with
                   its default chunks (4 tasks per CPU, at most 1024 calls)

Driver CPU/task and sleeps/task: the CPU time and the voluntary context
switches of the driver process during the run, per task (the runtime's
submitting and waiting, not the work).  "vs bare" is the runner's speed over
the bare processes' in the same round (median of rounds): on a busy machine
it moves less than the efficiency itself.

    python benchmarks/bench_efficiency.py [--work-ms 0.1 1] [--tasks-s 2] [--rounds 5]
"""

import argparse
import multiprocessing
import os
import resource
import statistics
import time

import nanoray as ray

_K = 0


def work(i):
    for _ in range(_K):
        pass
    return i


def _set_k(k):
    global _K
    _K = k


def calibrate(seconds):
    """Loop count whose run takes `seconds` on an idle CPU (best of several)."""
    k = 100000
    while True:
        _set_k(k)
        best = min(_timed(work) for _ in range(5))
        if best > 0.02:
            return max(1, int(k * seconds / best))
        k *= 2


def _timed(fn):
    t = time.perf_counter()
    fn(0)
    return time.perf_counter() - t


def _cpu():
    """(CPU seconds, voluntary context switches) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_nvcsw


def _since(c):
    now = _cpu()
    return now[0] - c[0], now[1] - c[1]


def run_bare(n, cpus, k):
    def child(share):
        _set_k(k)
        for i in range(share):
            work(i)
        os._exit(0)
    t = time.perf_counter()
    pids = []
    for c in range(cpus):
        pid = os.fork()
        if pid == 0:
            child(n // cpus)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    return time.perf_counter() - t, (0.0, 0)


def run_pool(n, cpus, k, chunks):
    with multiprocessing.Pool(cpus, initializer=_set_k, initargs=(k,)) as pool:
        pool.map(work, range(4 * cpus))           # warm
        c, t = _cpu(), time.perf_counter()
        if chunks:
            pool.map(work, range(n))
        else:
            [r.get() for r in [pool.apply_async(work, (i,)) for i in range(n)]]
        return time.perf_counter() - t, _since(c)


def run_nanoray(n, cpus, k, batched=False):
    ray.init(num_cpus=cpus)
    try:
        f = ray.remote(work)
        setk = ray.remote(_set_k)
        # every worker gets k: more calls than workers, each sets the global
        ray.get([setk.remote(k) for _ in range(8 * cpus)])
        ray.get([f.remote(i) for i in range(4 * cpus)])
        c, t = _cpu(), time.perf_counter()
        out = ray.get(f.map(range(n)) if batched else [f.remote(i) for i in range(n)])
        dt, dc = time.perf_counter() - t, _since(c)
        assert out == list(range(n))
        return dt, dc
    finally:
        ray.shutdown()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-ms", type=float, nargs="+", default=[0.1, 1.0])
    ap.add_argument("--tasks-s", type=float, default=2.0,
                    help="ideal seconds of work per round (sets the task count)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--only", nargs="+", default=None)
    a = ap.parse_args()
    cpus = a.num_cpus
    print("machine: %d CPUs; num_cpus=%d; medians of %d rounds" % (os.cpu_count(), cpus, a.rounds))
    print("%-8s %-18s %10s %8s %14s %15s %10s" % (
        "work", "runner", "efficiency", "vs bare", "driver CPU/task", "driver sleeps/task",
        "tasks/s"))
    for ms in a.work_ms:
        k = calibrate(ms / 1000)
        _set_k(k)
        one = statistics.median(_timed(work) for _ in range(20))
        n = max(100, int(a.tasks_s * cpus / one))
        ideal = n * one / cpus
        runners = {
            "bare processes": lambda: run_bare(n, cpus, k),
            "Pool.map chunks": lambda: run_pool(n, cpus, k, True),
            "Pool.apply_async": lambda: run_pool(n, cpus, k, False),
            "nanoray": lambda: run_nanoray(n, cpus, k),
            "nanoray f.map": lambda: run_nanoray(n, cpus, k, True),
        }
        res = {name: [] for name in runners}
        for _ in range(a.rounds):                 # interleaved rounds
            for name, fn in runners.items():
                if a.only and name not in a.only:
                    continue
                res[name].append(fn())
        bare = res.get("bare processes")
        for name, rs in res.items():
            if not rs:
                continue
            dt = statistics.median(r[0] for r in rs)
            cpu = statistics.median(r[1][0] for r in rs)
            sw = statistics.median(r[1][1] for r in rs)
            # the same round's bare processes: a ratio that the machine's noise moves less
            vs = (statistics.median(b[0] / r[0] for b, r in zip(bare, rs)) if bare else float("nan"))
            print("%-8s %-18s %10.3f %8.3f %12.2f us %15.2f %10.0f" % (
                "%gms" % ms, name, ideal / dt, vs, cpu / n * 1e6, sw / n, n / dt), flush=True)


if __name__ == "__main__":
    main()
