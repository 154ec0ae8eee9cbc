"""Scaling with the number of worker processes: pipelined no-op tasks/s and
the throughput of 2 ms CPU-bound tasks, for nanoray and multiprocessing.Pool
at num_cpus = 1, 2, 4, ... up to the machine's CPU count.  On the 2-core
development machine this shows little; on a many-core machine it shows how
the single shared-region lock and the submitting driver scale.

    python benchmarks/bench_scaling.py [--tasks 20000] [--max-cpus N]
"""

import argparse
import multiprocessing
import os
import time

import nanoray as ray


def noop(x):
    return x


def spin_2ms(x):
    end = time.perf_counter() + 0.002
    while time.perf_counter() < end:
        pass
    return x


def rate_nanoray(n_cpus, fn, n):
    ray.init(num_cpus=n_cpus)
    try:
        rf = ray.remote(fn)
        ray.get([rf.remote(i) for i in range(4 * n_cpus)])
        t = time.perf_counter()
        ray.get([rf.remote(i) for i in range(n)])
        return n / (time.perf_counter() - t)
    finally:
        ray.shutdown()


def rate_pool(n_cpus, fn, n):
    with multiprocessing.Pool(n_cpus) as pool:
        [r.get() for r in [pool.apply_async(fn, (i,)) for i in range(4 * n_cpus)]]
        t = time.perf_counter()
        [r.get() for r in [pool.apply_async(fn, (i,)) for i in range(n)]]
        return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--max-cpus", type=int, default=os.cpu_count())
    a = ap.parse_args()
    cpus = [1]
    while cpus[-1] * 2 <= a.max_cpus:
        cpus.append(cpus[-1] * 2)
    if cpus[-1] != a.max_cpus:
        cpus.append(a.max_cpus)
    print("machine: %d CPUs" % os.cpu_count())
    print("%8s %16s %16s %8s %16s %16s %8s" % ("num_cpus", "nanoray noop/s", "Pool noop/s",
                                                 "ratio", "nanoray 2ms/s", "Pool 2ms/s", "ratio"))
    for n in cpus:
        a1, b1 = rate_nanoray(n, noop, a.tasks), rate_pool(n, noop, a.tasks)
        m = max(200, 100 * n)
        a2, b2 = rate_nanoray(n, spin_2ms, m), rate_pool(n, spin_2ms, m)
        print("%8d %16.0f %16.0f %7.2fx %16.0f %16.0f %7.2fx" % (n, a1, b1, a1 / b1, a2, b2,
                                                                  a2 / b2), flush=True)


if __name__ == "__main__":
    main()
